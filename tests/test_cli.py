"""The ``vpbench`` command through its real entry point, against real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from conftest import DatabaseFactory, interruptible
from vpbench.cli.main import exit_code, main
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.dataset.snapshot import snapshot_tables
from vpbench.errors import (
    CheckFailedError,
    MigrationError,
    ResultsFormatError,
    SamplerError,
    SeedInterruptedError,
    ServerError,
    StepsInterruptedError,
    UnknownMigrationError,
    UnsafeOperationError,
    UsageError,
)
from vpbench.server.target import ServerTarget


@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str


Runner = Callable[..., CliRun]


@pytest.fixture
def vpbench(
    target: ServerTarget, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Runner:
    """Run ``main(argv)`` in-process with the test server as ``VPBENCH_DSN``."""
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*argv: str) -> CliRun:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        captured = capsys.readouterr()
        code = exit_info.value.code
        return CliRun(code if isinstance(code, int) else 1, captured.out, captured.err)

    return run


def assert_one_line_error(run: CliRun, code: int, *fragments: str) -> None:
    assert run.code == code, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert "Traceback" not in run.err
    for fragment in fragments:
        assert fragment in lines[0]


def test_seed_then_audit(vpbench: Runner, target: ServerTarget, session_prefix: str) -> None:
    name = f"{session_prefix}_cli"
    run = vpbench("seed", "--profile", "tiny", "--seed", "5", "--db", name)
    assert run.code == 0, run.err
    for table in ("users", "quiz_attempts", "reflections", "total"):
        assert table in run.out
    assert "rows/s" in run.out
    assert "orphaned_quiz_attempts" in run.out

    audit = vpbench("audit", "--db", name, "--json")
    assert audit.code == 0, audit.err
    document = json.loads(audit.out)
    counts = {check["name"]: check["violations"] for check in document["checks"]}
    with psycopg.connect(target.for_database(name)) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM quiz_attempts q "
            "WHERE NOT EXISTS (SELECT 1 FROM videos v WHERE v.id::text = q.video_id)"
        ).fetchone()
    assert orphans is not None and counts["orphaned_quiz_attempts"] == orphans[0] > 0

    rendered = vpbench("audit", "--db", name)
    assert rendered.code == 0 and "stale_stored_scores" in rendered.out
    failing = vpbench("audit", "--db", name, "--fail-on-violations")
    assert failing.code == 1


def test_unknown_profile(vpbench: Runner) -> None:
    run = vpbench("seed", "--profile", "huge")
    assert_one_line_error(run, 2, "unknown profile 'huge'", "tiny, small, medium, large")


def test_bad_dirty_rate(vpbench: Runner) -> None:
    run = vpbench("seed", "--dirty-rate", "stale_scores=2")
    assert_one_line_error(run, 2, "stale_scores", "between 0 and 0.5")


def test_refused_dsn_names_host_and_port_but_not_the_password(vpbench: Runner) -> None:
    run = vpbench("audit", "--dsn", "postgresql://postgres:s3cret@127.0.0.1:1/nowhere")
    assert_one_line_error(run, 1, "cannot connect to PostgreSQL at 127.0.0.1:1/nowhere")
    assert "s3cret" not in run.err + run.out


def database_exists(target: ServerTarget, name: str) -> bool:
    with psycopg.connect(target.conninfo) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return found is not None


def test_a_dsn_that_names_a_database_means_that_database(
    vpbench: Runner, target: ServerTarget, session_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like psql and pgbench: the database in --dsn, VPBENCH_DSN or DATABASE_URL is the one
    every command works in; --db overrides it; CREATE/DROP go through another database."""
    name = f"{session_prefix}_named"
    dsn = target.for_database(name)
    default_existed = database_exists(target, "vpbench")
    seeded = vpbench("seed", "--dsn", dsn)
    assert seeded.code == 0, seeded.err
    assert f"/{name} " in seeded.err
    with psycopg.connect(dsn) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()
    assert users is not None and users[0] > 0
    assert database_exists(target, "vpbench") == default_existed

    monkeypatch.delenv("VPBENCH_DSN")
    monkeypatch.setenv("DATABASE_URL", dsn)
    status = vpbench("migrate", "status")
    assert status.code == 0 and f"/{name}" in status.out and "pending" in status.out
    other = vpbench("audit", "--db", f"{name}_other")
    assert_one_line_error(other, 1, f"/{name}_other", "does not exist")

    dropped = vpbench("db", "drop")
    assert dropped.code == 0 and name in dropped.out
    assert not database_exists(target, name)


def foreign_database(create_database: DatabaseFactory, suffix: str) -> tuple[str, str]:
    """(conninfo, name) of a database vpbench did not create, holding somebody's table."""
    conninfo = create_database(suffix)
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    return conninfo, str(psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])


def assert_invoices_kept(conninfo: str) -> None:
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT to_regclass('invoices')::text").fetchone() == ("invoices",)


def test_a_dsn_database_vpbench_did_not_create_is_refused_as_before(
    vpbench: Runner, create_database: DatabaseFactory
) -> None:
    conninfo, name = foreign_database(create_database, "cli_dsn_foreign")
    assert_one_line_error(vpbench("seed", "--dsn", conninfo), 2, f"database '{name}'", "--force")
    assert_one_line_error(vpbench("db", "drop", "--dsn", conninfo), 2, "refusing to drop")
    assert_invoices_kept(conninfo)


def test_a_binary_or_empty_workload_is_one_line_and_exit_2(vpbench: Runner, tmp_path: Path) -> None:
    binary, empty = tmp_path / "chart.toml", tmp_path / "empty.toml"
    binary.write_bytes(bytes(range(128, 256)))
    empty.write_text("# nothing yet\n")
    out = tmp_path / "out"
    assert_one_line_error(
        vpbench("run", str(binary), "--out", str(out)), 2, f"{binary}:1: not a UTF-8"
    )
    assert_one_line_error(vpbench("run", str(empty), "--out", str(out)), 2, f"{empty}: defines no")
    assert not out.exists()


def test_seed_refuses_unmarked_non_empty_database(
    vpbench: Runner, create_database: DatabaseFactory
) -> None:
    conninfo, name = foreign_database(create_database, "cli_foreign")
    run = vpbench("seed", "--db", name)
    assert_one_line_error(run, 2, f"refusing to seed database '{name}'", "--force")
    assert_invoices_kept(conninfo)


def test_drop_refuses_unmarked_database(
    vpbench: Runner, create_database: DatabaseFactory, target: ServerTarget
) -> None:
    conninfo = create_database("cli_keep")
    name = str(psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])
    run = vpbench("db", "drop", "--db", name)
    assert_one_line_error(run, 2, "refusing to drop database", "--force")
    assert vpbench("db", "drop", "--db", name, "--force").code == 0
    assert not database_exists(target, name)


def test_ctrl_c_during_seeding_rolls_back(target: ServerTarget, session_prefix: str) -> None:
    """SIGINT to a real ``vpbench seed`` process mid-COPY leaves the earlier data intact."""
    name = f"{session_prefix}_sigint"
    env = {**os.environ, "VPBENCH_DSN": target.conninfo}
    command = [sys.executable, "-m", "vpbench", "seed", "--db", name]
    first = subprocess.run([*command, "--seed", "1"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(target.for_database(name)) as conn:
        before = snapshot_tables(conn)

    process = subprocess.Popen(
        [*command, "--seed", "2", "--profile", "small"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    with psycopg.connect(target.conninfo, autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            copying = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND query LIKE 'COPY \"quiz_attempts\"%%'",
                [name],
            ).fetchone()
            if copying and copying[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("seeding never reached the quiz_attempts COPY")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "rolled back" in stderr.strip().splitlines()[-1]
    with psycopg.connect(target.for_database(name)) as conn:
        assert snapshot_tables(conn) == before


@pytest.fixture(scope="module")
def seeded(target: ServerTarget, session_prefix: str) -> str:
    name = f"{session_prefix}_cli_exit"
    seed_database(target, name, get_profile("tiny"), seed=3)
    return name


def test_an_unwritable_out_folder_is_bad_input(
    vpbench: Runner, seeded: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    run = vpbench("run", "--db", seeded, "--repeat", "1", "--out", str(tmp_path / "a-file" / "x"))
    assert_one_line_error(run, 2, "cannot write results", "choose another --out")


def test_a_workload_app_that_cannot_be_imported_is_bad_input(
    vpbench: Runner, seeded: str, tmp_path: Path
) -> None:
    workload = tmp_path / "page.toml"
    workload.write_text('[queries.one]\nsql = "SELECT 1"\napp = "no_such_module:render"\n')
    run = vpbench("run", str(workload), "--db", seeded, "--out", str(tmp_path / "out"))
    assert run.code == 2, run
    assert f"{workload}:3: " in run.err and "no_such_module" in run.err
    assert not (tmp_path / "out").exists()


def test_an_unknown_migration_target_is_bad_input(vpbench: Runner, seeded: str) -> None:
    run = vpbench("migrate", "up", "9999_nothing", "--db", seeded)
    assert_one_line_error(run, 2, "unknown migration '9999_nothing'", "0001_quiz_attempt_links")


def test_the_one_exit_code_map() -> None:
    assert [
        exit_code(error("x"))
        for error in (
            UsageError,
            SamplerError,
            ResultsFormatError,
            UnsafeOperationError,
            UnknownMigrationError,
            MigrationError,
            ServerError,
            CheckFailedError,
            SeedInterruptedError,
            StepsInterruptedError,
        )
    ] == [2, 2, 2, 2, 2, 1, 1, 1, 130, 130]


def test_verbose_logs_what_vpbench_does(vpbench: Runner, seeded: str) -> None:
    quiet = vpbench("migrate", "up", "0001_quiz_attempt_links", "--db", seeded)
    assert quiet.code == 0 and "INFO" not in quiet.err
    loud = vpbench("-v", "migrate", "down", "base", "--db", seeded)
    assert loud.code == 0, loud.err
    assert "INFO" in loud.err and "migration 0001_quiz_attempt_links down in" in loud.err


def test_connections_fail_in_one_line_with_the_option_that_named_them(
    vpbench: Runner, tmp_path: Path
) -> None:
    workload = str(Path(__file__).resolve().parents[1] / "workloads" / "video_page.toml")
    nowhere = "postgresql://postgres@127.0.0.1:1"
    unreachable = vpbench("ab", workload, "--a", f"{nowhere}/x", "--b", f"{nowhere}/y",
                          "--out", str(tmp_path))  # fmt: skip
    assert_one_line_error(unreachable, 1, "cannot connect to PostgreSQL at 127.0.0.1:1/x",
                          "(from --a)")  # fmt: skip
    malformed = vpbench("ab", workload, "--a", "postgresql://[bad", "--b", "x",
                        "--out", str(tmp_path))  # fmt: skip
    assert_one_line_error(malformed, 2, "--a is not a valid connection string")
    assert list(tmp_path.iterdir()) == []


def test_a_results_document_of_the_wrong_shape_is_bad_input(
    vpbench: Runner, tmp_path: Path
) -> None:
    """Before the shapes, each of these was a KeyError traceback (exit 1)."""
    cases = [
        ({"schema_version": 2, "kind": "run"},
         "not a valid run document: metadata: Field required"),
        ({"schema_version": 3, "kind": "run", "metadata": {}, "entries": [{"name": "q"}]},
         "not a valid run document: entries.0.kind: Field required"),
        ({"schema_version": 3, "kind": "steps-summary", "answers": {}},
         "not a valid steps-summary document: steps: Field required"),
        ({"schema_version": 3, "kind": "histogram"}, "unknown kind of results document"),
    ]  # fmt: skip
    for number, (document, expected) in enumerate(cases):
        path = tmp_path / f"doc{number}.json"
        path.write_text(json.dumps(document))
        for command in (["compare", str(path), str(path)], ["report", str(path), "--out",
                                                            str(tmp_path / "out")]):  # fmt: skip
            assert_one_line_error(vpbench(*command), 2, f"{path}: {expected}")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_unexpected_failure_is_an_internal_error_not_the_users(
    vpbench: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What slips past every expected failure is one line that says it is a bug, exit 70;
    -vv logs the traceback."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something vpbench did not expect")

    monkeypatch.setattr("vpbench.cli.data.run_audit", broken)
    assert_one_line_error(vpbench("audit"), 70, "vpbench: internal error: RuntimeError: "
                          "something vpbench did not expect (a bug in vpbench")  # fmt: skip
    verbose = vpbench("-vv", "audit")
    assert verbose.code == 70 and "Traceback" in verbose.err and "broken" in verbose.err
