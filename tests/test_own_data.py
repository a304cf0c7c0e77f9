"""``steps --from`` a team's own database or dump: the source is only read and copied (its
rows, schema and write counters stay as they were, and no session on it is ended), and the
whole pipeline runs on the copy."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from test_ci import git
from test_layouts import ALEMBIC, REVISIONS, as_pairs, with_online_revision
from test_steps import QUICK, REFERENCE, TINY, databases
from vpbench.dataset.seed import seed_database
from vpbench.measure.writecost import WriteOptions, measure_write_costs
from vpbench.migrations.alembic_project import alembic_current
from vpbench.migrations.folder import Migration
from vpbench.migrations.sources import discover_migrations
from vpbench.server.backup import CLONE, DUMP, TEMPLATE, restore_dump, run_client
from vpbench.server.source_copy import RESTORE, StartFrom, copy_from_database, inspect_source
from vpbench.server.target import ServerTarget
from vpbench.steps.pipeline import run_steps
from vpbench.steps.pull_request import MARKER
from vpbench.steps.summary import index_bytes_added

APP_TABLES = ("users", "courses", "videos", "quiz_attempts", "reflections")


@pytest.fixture(scope="module")
def staging(target: ServerTarget, session_prefix: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, Path]]:  # fmt: skip
    """A team's staging database: ``pg_dump`` of a seeded ``tiny`` restored into a database
    vpbench did not create (unmarked), and the dump file itself."""
    seeded = f"{session_prefix}_own_seeded"
    seed_database(target, seeded, TINY, seed=3)
    dump = tmp_path_factory.mktemp("dump") / "staging.dump"
    run_client("pg_dump", ["--format=custom", f"--file={dump}"], target.for_database(seeded))
    name = f"{session_prefix}_own_staging"
    restored(target, dump, name)
    yield name, dump


def restored(target: ServerTarget, dump: Path, name: str) -> None:
    """``dump`` restored into a new database ``name``, then settled so that nothing but a
    session's own work writes to it while a test watches its write counters: a restored
    database is what autovacuum analyses first, and the statistics it stores count as
    rows inserted into that database. So: VACUUM (ANALYZE) the whole database (catalogs
    too), and autovacuum off on its tables for the rest of the session."""
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    restore_dump(dump, target.for_database(name))
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        for table in APP_TABLES:
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off, "
                        "toast.autovacuum_enabled = off)").format(sql.Identifier(table))
            )  # fmt: skip


def _fingerprint(target: ServerTarget, name: str) -> dict[str, object]:
    """Rows per table, the schema, and the server's count of rows written to ``name``."""
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        rows = {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
            for t in APP_TABLES
        }
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
                               "ORDER BY 1").fetchall()  # fmt: skip
    return {"rows": rows, "columns": columns, "indexes": indexes,
            "written": _written(target, name)}  # fmt: skip


def _written(target: ServerTarget, name: str) -> tuple[int, int, int]:
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()" if conn.info.server_version >= 150000
                     else "SELECT 1")  # fmt: skip
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = %s", [name]
        ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.dsn_server
@pytest.mark.slow
def test_steps_from_a_busy_staging_database_leaves_it_untouched(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = staging
    before = _fingerprint(target, name)
    with psycopg.connect(target.for_database(name)) as other:  # somebody else's session
        other.execute("SELECT count(*) FROM users")  # a transaction left open on it
        pid = other.info.backend_pid
        result = run_steps(
            target, f"{session_prefix}_own_work", profile=TINY, seed=3,
            workload_paths=[REFERENCE / "video_page.toml", REFERENCE / "voice_memos.toml"],
            out_dir=tmp_path, options=QUICK, force=True, start_from=StartFrom(database=name),
        )  # fmt: skip
        assert other.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert other.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
    assert result.passed, [
        (s.migration.id, s.passed, s.old_app.undeclared, s.available, s.unexpected_changes)
        for s in result.steps
    ]
    assert len(result.steps) == 7 and result.steps[-1].audit_after.total_violations == 0
    first = result.steps[0]
    orphans = first.audit_before.check("orphaned_quiz_attempts").violations
    assert orphans > 0 and first.quarantined["quiz_attempts"] == orphans
    after = _fingerprint(target, name)
    assert after == before  # rows, schema, indexes and the server's write counters
    summary = json.loads((tmp_path / "summary.json").read_text())
    data = summary["data"]
    # One session was open on it: a snapshot-consistent dump, not a template copy.
    assert data["method"] == DUMP and data["why"].startswith("1 session(s) on it")
    assert name in data["source"] and data["copied_at"].endswith("UTC")
    assert f"database {name}" in result.data
    from vpbench.reporting.markdown import build_report

    report = build_report([tmp_path], tmp_path).read_text()
    assert f"Data: a copy of database {name}" in report


@pytest.mark.dsn_server
def test_the_untouched_check_sees_a_single_write(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path]
) -> None:
    """The twins of the check above, on a copy of staging restored and settled the same
    way: one row written moves its fingerprint (the write counters and the row counts),
    and so does vpbench's own write probe, whose inserts are rolled back and leave rows
    and schema as they were: only the write counters see it."""
    _, dump = staging
    twin = f"{session_prefix}_own_twin"
    restored(target, dump, twin)
    before = _fingerprint(target, twin)
    assert _fingerprint(target, twin) == before  # settled: nothing writes on its own
    measure_write_costs(target.for_database(twin), target.for_database(twin),
                        WriteOptions(rounds=1, repeat=1), tables=["quiz_attempts"])  # fmt: skip
    probed = _fingerprint(target, twin)
    assert probed["written"] != before["written"]
    assert {k: v for k, v in probed.items() if k != "written"} == {
        k: v for k, v in before.items() if k != "written"
    }
    with psycopg.connect(target.for_database(twin)) as conn:
        conn.execute("INSERT INTO courses SELECT gen_random_uuid(), 't', 'd', now()")
    after = _fingerprint(target, twin)
    assert after["written"] != probed["written"] and after["rows"] != probed["rows"]


@pytest.mark.slow
def test_an_idle_source_is_copied_as_a_template_and_a_dump_is_restored(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path], tmp_path: Path
) -> None:
    name, dump = staging
    copied = copy_from_database(target, inspect_source(target, name), f"{session_prefix}_own_t")
    assert copied.method in (CLONE, TEMPLATE) and copied.why == "no session on it"
    same = _fingerprint(target, f"{session_prefix}_own_t")
    assert same["rows"] == _fingerprint(target, name)["rows"]
    # A dump file, through the CLI: restored, then the series runs (up to its first step).
    out = tmp_path / "out"
    code, _, err = _cli(
        "steps", "--from-dump", str(dump), "--db", f"{session_prefix}_own_d", "--force",
        "--to", "0001_quiz_attempt_links", "--rounds", "2", "--max-rounds", "2", "--repeat", "2",
        "--no-traffic", "--no-report", "--out", str(out), dsn=target.conninfo,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads((out / "summary.json").read_text())["data"]
    assert data["method"] == RESTORE and data["source"] == f"dump {dump.resolve()}"


def test_a_source_that_cannot_be_copied_is_one_line_and_writes_nothing(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = staging
    not_a_dump = tmp_path / "notes.dump"
    not_a_dump.write_text("SELECT 1;\n")
    working = f"{session_prefix}_own_bad"
    cases = [
        (("--from", f"{session_prefix}_missing", "--force"), "does not exist"),
        (("--from-dump", str(not_a_dump), "--force"), "not a pg_dump custom-format file"),
        (("--from", name), "reference migrations"),  # the bundled series needs --force
    ]
    for options, expected in cases:
        out = tmp_path / "out"
        code, _, err = _cli("steps", *options, "--db", working, "--out", str(out),
                            dsn=target.conninfo)  # fmt: skip
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err
        assert not out.exists() or not any(out.iterdir())
        assert databases(target, working) == []


def _cli(*args: str, dsn: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "vpbench", *args],
        capture_output=True, text=True, env={**_env(), "VPBENCH_DSN": dsn}, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


ATTEMPTS_BY_USER = """\
[params.user]
source = "SELECT DISTINCT user_id::text FROM quiz_attempts ORDER BY 1"
pool = 20

[queries.attempts_of_user]
target_ms = 20
sql = "SELECT id, score FROM quiz_attempts WHERE user_id = :user::uuid ORDER BY started_at"
"""


def as_folders(migrations: tuple[Migration, ...], folder: Path) -> Path:
    """The same steps in vpbench's own folder format."""
    for number, step in enumerate(migrations, start=1):
        each = folder / f"{number:04d}_{step.id}"
        each.mkdir(parents=True)
        (each / "up.sql").write_text(step.up_sql)
        (each / "down.sql").write_text(step.down_sql)
        transactional = str(step.transactional).lower()
        (each / "migration.toml").write_text(
            f'title = "{step.title}"\ntransactional = {transactional}\n'
        )
    return folder


@pytest.mark.slow
def test_a_teams_alembic_project_goes_through_steps_like_the_same_sql_elsewhere(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path], tmp_path: Path
) -> None:
    """Own migrations on own data need no --force; the alembic revisions, the same SQL as
    numbered pairs and as vpbench folders give the same figures: locks, stalls, bytes,
    reversibility."""
    name, _ = staging
    workload = tmp_path / "attempts.toml"
    workload.write_text(ATTEMPTS_BY_USER)
    rendered = discover_migrations(ALEMBIC)
    pairs = as_pairs(rendered, tmp_path / "pairs")
    folders = as_folders(rendered, tmp_path / "folders")
    runs = {}
    for label, migrations in (("alembic", ALEMBIC), ("pairs", pairs), ("folders", folders)):
        runs[label] = run_steps(
            target, f"{session_prefix}_own_{label}", profile=TINY, seed=3,
            workload_paths=[workload], migrations_dir=migrations, out_dir=tmp_path / label,
            options=QUICK, start_from=StartFrom(database=name),
        )  # fmt: skip
    alembic = runs["alembic"]
    assert all(run.passed for run in runs.values())
    assert [s.migration.id for s in alembic.steps] == list(REVISIONS)
    for other in (runs["pairs"], runs["folders"]):
        for ours, theirs in zip(alembic.steps, other.steps, strict=True):
            assert ours.migration.transactional == theirs.migration.transactional
            assert [(r.text, r.locks, r.rewrote) for r in ours.statements] == [
                (r.text, r.locks, r.rewrote) for r in theirs.statements
            ]
            assert ours.reversible and theirs.reversible
            assert index_bytes_added(ours) == index_bytes_added(theirs)
            for found in (ours.availability, theirs.availability):
                assert found is not None and found.within_budget
    index_step = alembic.steps[1]
    assert index_bytes_added(index_step) > 0
    assert alembic.data.startswith(f"a copy of database {name}")
    with psycopg.connect(target.for_database(f"{session_prefix}_own_alembic")) as conn:
        assert alembic_current(conn) == (REVISIONS[-1],)


@pytest.mark.slow
def test_ci_pr_judges_an_alembic_pull_request_on_a_copy_of_staging(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path], tmp_path: Path
) -> None:
    """Base: two alembic revisions; head adds the third. Both refs are migrated from one
    copy of the team's staging database, which stays as it was."""
    name, _ = staging
    before = _fingerprint(target, name)
    root = tmp_path / "app"
    shutil.copytree(ALEMBIC, root / "db", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "workloads").mkdir()
    (root / "workloads" / "attempts.toml").write_text(ATTEMPTS_BY_USER)
    third = next((root / "db" / "versions").glob("c3d2*.py"))
    held = third.read_text()
    third.unlink()
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    base = git(root, "rev-parse", "HEAD")
    third.write_text(held)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "head")
    out = tmp_path / "pr"
    code, _, err = _cli(
        "ci", "pr", "--base", base, "--head", "HEAD", "--repo", str(root),
        "--migrations-path", "db", "--workloads-path", "workloads", "--from", name,
        "--db", f"{session_prefix}_own_pr", "--rounds", "2", "--max-rounds", "2",
        "--repeat", "2", "--out", str(out), dsn=target.conninfo,
    )  # fmt: skip
    assert code == 0, err
    said = " ".join(err.split())  # the console wraps long lines
    assert f"working database {session_prefix}_own_pr_pr_base: copy of database {name}" in said
    assert (out / "comment.md").read_text().startswith(MARKER)
    for side, revision in (("base", REVISIONS[1]), ("head", REVISIONS[2])):
        with psycopg.connect(target.for_database(f"{session_prefix}_own_pr_pr_{side}")) as conn:
            assert alembic_current(conn) == (revision,)
    assert _fingerprint(target, name) == before


@pytest.mark.slow
def test_an_online_alembic_revision_goes_through_steps_and_the_report_says_so(
    target: ServerTarget, session_prefix: str, staging: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = staging
    workload = tmp_path / "attempts.toml"
    workload.write_text(ATTEMPTS_BY_USER)
    out = tmp_path / "out"
    result = run_steps(
        target, f"{session_prefix}_own_online", profile=TINY, seed=3, workload_paths=[workload],
        migrations_dir=with_online_revision(tmp_path), out_dir=out, options=QUICK,
        start_from=StartFrom(database=name),
    )  # fmt: skip
    online = result.steps[-1]
    assert online.migration.online and online.passed and online.reversible
    assert online.availability is not None and online.statements == ()
    from vpbench.reporting.markdown import build_report

    report = " ".join(build_report([out], out).read_text().split())
    assert "Run online by alembic, on vpbench's connection" in report
    assert f"`{online.migration.id}`: its code cannot be rendered as SQL offline" in report
