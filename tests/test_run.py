"""``vpbench run`` against real PostgreSQL: measurements, plans, failures, results files."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from conftest import interruptible
from vpbench.cli._render import run_table
from vpbench.cli.main import main
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.errors import ResultsFormatError, SamplerError, VpbenchError
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import PreparedStatements, RunOptions
from vpbench.migrations.apply import apply_step
from vpbench.migrations.sources import discover_migrations
from vpbench.results.documents import SCHEMA_VERSION, read_document
from vpbench.results.frames import load
from vpbench.server.target import ServerTarget
from vpbench.workload.spec import parse_sql

REFERENCE = Path(__file__).resolve().parents[1] / "workloads"
QUICK = RunOptions(warmup=1, repeat=6, explain=2, clients=1, timeout_ms=5_000, seed=3)

SMALL_WORKLOAD = """\
[params.video]
source = "SELECT id::text FROM videos ORDER BY id"
pool = 5

[params.naptime]
value = 0.2

[queries.video_by_id]
target_ms = 50
sql = "SELECT id, title FROM videos WHERE id = :video"

[queries.broken]
# prepares fine, fails when run (a statement the server refuses to prepare stops the run)
sql = "SELECT title::int FROM videos WHERE id = :video"

[queries.sleepy]
sql = "SELECT pg_sleep(:naptime)"

[scenarios.both]
queries = ["video_by_id", "sleepy"]
"""


@pytest.fixture(scope="module")
def legacy_db(target: ServerTarget, session_prefix: str) -> str:
    name = f"{session_prefix}_run"
    seed_database(target, name, get_profile("tiny"), seed=11)
    return name


def write(folder: Path, text: str) -> Path:
    path = folder / "small.toml"
    path.write_text(text)
    return path


def test_reference_workloads_on_the_legacy_database(
    target: ServerTarget, legacy_db: str, tmp_path: Path
) -> None:
    outcome = run_workloads(
        target,
        legacy_db,
        [REFERENCE / "video_page.toml", REFERENCE / "voice_memos.toml"],
        QUICK,
        label="legacy",
        out_dir=tmp_path,
    )
    assert not outcome.failures
    assert [p.name for p in tmp_path.iterdir()] == [outcome.path.name]  # no temp files left
    by_name = {e.name: e for e in outcome.entries}
    assert set(by_name) >= {
        "video_header",
        "course_progress",
        "video_page",
        "video_page[app]",
        "long_memos_in_course",
        "latest_memo_per_video",
    }
    for entry in outcome.entries:
        assert len(entry.samples_ns) == QUICK.repeat, entry.name
        assert entry.variant is None or entry.kind == "app"
        if entry.kind != "app":
            assert len(entry.explains) == QUICK.explain
            assert entry.server_p50_ms is not None and entry.server_p50_ms > 0
    # The legacy schema has no index on quiz_attempts: the plan says so.
    attempts = by_name["quiz_attempts_for_video"].plan_summaries["quiz_attempts_for_video"]
    assert [s.relation for s in attempts.seq_scans] in ([], ["quiz_attempts"])
    assert "Seq Scan" in attempts.node_types
    page = by_name["video_page"]
    assert (
        set(page.plan_summaries)
        == set(page.member_samples_ns)
        == {
            "video_header",
            "quiz_attempts_for_video",
            "reflections_for_video",
            "course_progress",
            "recent_voice_memos",
        }
    )

    # The table the CLI prints names the app-layer version as such (not as rich markup).
    console = Console(record=True, width=250)
    console.print(run_table(outcome))
    names = [line.split("│")[1].strip() for line in console.export_text().splitlines()
             if line.startswith("│") and line.split("│")[1].strip()]  # fmt: skip
    assert names.count("video_page") == 1 and names.count("video_page[app]") == 1

    document = read_document(outcome.path)
    assert document["schema_version"] == SCHEMA_VERSION
    meta = document["metadata"]
    assert meta["seed"]["profile"] == "tiny" and meta["seed"]["seed"] == 11
    assert meta["applied_migrations"] == []
    assert set(meta["postgres"]["settings"]) >= {
        "shared_buffers",
        "work_mem",
        "jit",
        "random_page_cost",
        "effective_cache_size",
    }
    assert meta["label"] == "legacy" and meta["options"]["repeat"] == QUICK.repeat

    frames = load(tmp_path)
    assert len(frames.samples) == sum(len(e.samples_ns) for e in outcome.entries)
    assert set(frames.samples.columns) >= {"run", "name", "kind", "sample", "latency_ms"}
    assert (frames.samples["latency_ms"] > 0).all()
    first = frames.samples[frames.samples["name"] == "video_header"]["latency_ms"].tolist()
    assert first == [ns / 1e6 for ns in by_name["video_header"].samples_ns]
    assert len(frames.entries) == len(outcome.entries)
    assert len(frames.explains) == sum(len(e.explains) for e in outcome.entries)


def test_failures_and_timeouts_are_recorded_and_the_rest_runs(
    target: ServerTarget, legacy_db: str, tmp_path: Path
) -> None:
    options = RunOptions(warmup=0, repeat=4, explain=1, clients=1, timeout_ms=50, seed=1)
    outcome = run_workloads(
        target, legacy_db, [write(tmp_path, SMALL_WORKLOAD)], options, out_dir=tmp_path / "out"
    )
    by_name = {e.name: e for e in outcome.entries}
    assert by_name["video_by_id"].status == "ok"
    assert by_name["video_by_id"].meets_target is True
    assert by_name["broken"].status == "error"
    assert "invalid input syntax for type integer" in (by_name["broken"].error or "")
    assert by_name["sleepy"].status == "timeout"
    assert by_name["sleepy"].timeouts == 3  # stops after three
    assert by_name["both"].status == "timeout"
    assert [e.name for e in outcome.failures] == ["broken"]
    saved = {e["name"]: e for e in read_document(outcome.path)["entries"]}
    assert saved["broken"]["status"] == "error" and saved["sleepy"]["timeouts"] == 3


def test_clients_run_concurrently(target: ServerTarget, legacy_db: str, tmp_path: Path) -> None:
    workload = SMALL_WORKLOAD.split("[queries.broken]")[0]
    workload = workload.replace("[params.naptime]\nvalue = 0.2\n", "")
    options = RunOptions(warmup=1, repeat=10, explain=0, clients=3, timeout_ms=5_000, seed=1)
    outcome = run_workloads(
        target, legacy_db, [write(tmp_path, workload)], options, out_dir=tmp_path / "out"
    )
    (entry,) = outcome.entries
    assert entry.clients == 3 and len(entry.samples_ns) == 30
    assert entry.throughput_per_s is not None and entry.throughput_per_s > 0


def test_nothing_is_written_when_a_source_is_empty(
    target: ServerTarget, legacy_db: str, tmp_path: Path
) -> None:
    empty = SMALL_WORKLOAD.replace("FROM videos ORDER BY id", "FROM videos WHERE false")
    with pytest.raises(SamplerError, match=r"small\.toml:1: parameter source 'video' returned no"):
        run_workloads(target, legacy_db, [write(tmp_path, empty)], QUICK, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # not even the folder


PREFLIGHT_WORKLOAD = """\
[params.video]
source = "SELECT id::text FROM videos ORDER BY id"

[queries.counted]
sql = "SELECT nextval('vp_preflight_probe'), id FROM videos WHERE id = :video"

[queries.typo]
sql = '''
SELECT id,
       titel
FROM videos WHERE id = :video
'''

[[queries.typo.variants]]
from = "0001_quiz_attempt_links"
sql = "SELECT id FROM videos WHERE id = :video"
"""


def test_a_statement_the_server_refuses_stops_the_run_before_any_timing(
    target: ServerTarget,
    legacy_db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every statement in force is prepared first: the missing column is reported with its
    file line and SQLSTATE, no statement ran (the probe sequence never advanced) and no
    results file exists."""
    with psycopg.connect(target.for_database(legacy_db), autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE IF NOT EXISTS vp_preflight_probe")
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    path = write(tmp_path, PREFLIGHT_WORKLOAD)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), "--db", legacy_db, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vpbench: error: {path}:10: query 'typo': column \"titel\" does not exist [SQLSTATE 42703]"
    ], err
    assert not out.exists() or list(out.iterdir()) == []
    with psycopg.connect(target.for_database(legacy_db), autocommit=True) as conn:
        assert conn.execute("SELECT is_called FROM vp_preflight_probe").fetchone() == (False,)
        # the twin: the same file, typo fixed, runs and draws from the probe
        fixed = write(tmp_path, PREFLIGHT_WORKLOAD.replace("titel", "title"))
        run_workloads(target, legacy_db, [fixed], QUICK, out_dir=out)
        assert conn.execute("SELECT is_called FROM vp_preflight_probe").fetchone() == (True,)
        conn.execute("DROP SEQUENCE vp_preflight_probe")


def test_unwritable_out_fails_before_running(
    target: ServerTarget, legacy_db: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(VpbenchError, match="cannot write results"):
        run_workloads(
            target, legacy_db, [write(tmp_path, SMALL_WORKLOAD)], QUICK, out_dir=blocker / "sub"
        )


def test_newer_results_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "kind": "run"}))
    with pytest.raises(ResultsFormatError, match="newer than this vpbench reads"):
        load(path)
    path.write_text("{not json")
    with pytest.raises(ResultsFormatError, match="not a readable results file"):
        load(path)


def test_cli_run_reports_failures_and_keeps_passwords_out(
    target: ServerTarget,
    legacy_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    host, port = params.get("host", "127.0.0.1"), params.get("port", 5432)
    # Trust authentication ignores the password, so it travels through the whole run.
    monkeypatch.setenv("VPBENCH_DSN", f"postgresql://postgres:hunter2@{host}:{port}/postgres")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "run",
                str(write(tmp_path, SMALL_WORKLOAD)),
                "--db",
                legacy_db,
                "--repeat",
                "3",
                "--warmup",
                "0",
                "--explain",
                "1",
                "--timeout",
                "100ms",
                "--out",
                str(out),
            ]
        )
    captured = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "query 'broken' failed: invalid input syntax for type integer" in captured.err
    assert "video_by_id" in captured.out and "timeout" in captured.out
    (result,) = out.glob("*.json")
    assert "hunter2" not in result.read_text()
    # The report beside the run: written even though an entry failed, naming it.
    report = out / f"{result.stem}-report" / "report.md"
    assert f"report: {report}" in captured.out.replace("\n", "")
    assert "**failed: `broken`**" in report.read_text()
    assert (report.parent / "latency.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "missing.toml"), "--db", legacy_db])
    assert exit_info.value.code == 2
    assert "missing.toml: cannot read workload file" in capsys.readouterr().err


def test_ctrl_c_mid_run_writes_nothing(
    target: ServerTarget, legacy_db: str, tmp_path: Path
) -> None:
    workload = write(
        tmp_path,
        SMALL_WORKLOAD.replace("0.2", "0.05").split("[queries.broken]")[0]
        + '[queries.sleepy]\nsql = "SELECT pg_sleep(:naptime)"\n',
    )
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vpbench",
            "run",
            str(workload),
            "--db",
            legacy_db,
            "--repeat",
            "200",
            "--out",
            str(out),
        ],
        env={**os.environ, "VPBENCH_DSN": target.conninfo},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    _wait_for_statement(target, legacy_db, "pg_sleep", process)  # the run is timing now
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run interrupted: no results file was written" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_reference_workloads_after_every_migration(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    """The same workload files run on the fully migrated schema, with the variants in force."""
    name = f"{session_prefix}_run_migrated"
    seed_database(target, name, get_profile("tiny"), seed=12)
    migrations = discover_migrations()
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        for migration in migrations:
            apply_step(conn, migration, "up")
    outcome = run_workloads(
        target,
        name,
        [REFERENCE / "video_page.toml", REFERENCE / "voice_memos.toml"],
        QUICK,
        out_dir=tmp_path,
    )
    assert not outcome.failures, [(e.name, e.error) for e in outcome.failures]
    by_name = {e.name: e for e in outcome.entries}
    assert outcome.metadata["applied_migrations"] == [m.id for m in migrations]
    assert by_name["course_progress"].variant == "0004_video_page_indexes"
    assert by_name["long_memos_in_course"].variant == "0003_voice_memo_metadata"
    assert by_name["video_header"].variant is None
    assert "course_progress@0004_video_page_indexes" in (by_name["video_page"].variant or "")
    indexes = by_name["memos_for_video"].plan_summaries["memos_for_video"].indexes_used
    assert indexes  # the voice-memo queries now use an index
    assert by_name["video_page[app]"].status == "ok"


@pytest.mark.slow
def test_prepared_names_never_carry_over_to_a_new_connection(
    target: ServerTarget, legacy_db: str
) -> None:
    """Connections opened and closed one after another often get the same id(); a cache
    keyed by id() then skips PREPARE on the new one and fails with 26000."""
    statements = PreparedStatements()
    sql = parse_sql("SELECT count(*) FROM videos WHERE position > :after")
    for after in range(30):
        conn = psycopg.connect(target.for_database(legacy_db), autocommit=True)
        assert statements.execute(conn, sql, {"after": after}) == 1
        conn.close()
        del conn
        gc.collect()


def test_single_client_throughput_leaves_out_the_warm_up(
    target: ServerTarget, legacy_db: str, tmp_path: Path
) -> None:
    workload = write(
        tmp_path,
        '[params.nap]\nvalue = 0.02\n\n[queries.nap]\nsql = "SELECT pg_sleep(:nap)"\n',
    )
    options = RunOptions(warmup=15, repeat=5, explain=0, clients=1, seed=1)
    (entry,) = run_workloads(target, legacy_db, [workload], options, out_dir=tmp_path).entries
    assert entry.throughput_per_s is not None
    # 5 timed naps of 20 ms: about 50/s. With the 15 warm-up naps counted, 12.5/s. The wall
    # time holds the samples and what runs between them (on a busy machine, a lot): judged
    # against the midpoint of the two rates, not against a fraction of the timed one.
    timed_rate = len(entry.samples_ns) / (sum(entry.samples_ns) / 1e9)
    with_warmup = timed_rate * len(entry.samples_ns) / (len(entry.samples_ns) + 15)
    assert (timed_rate + with_warmup) / 2 < entry.throughput_per_s <= 1.05 * timed_rate


def test_run_without_workload_files_measures_the_reference_ones(
    target: ServerTarget, legacy_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both reference workloads; the progress bar of the app-layer entry is named
    ``video_page[app]`` (its name was read as markup and shown as a second ``video_page``)."""
    out = tmp_path / "out"
    arguments = ["run", "--db", legacy_db, "--dsn", target.conninfo, "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main([*arguments, "--repeat", "2", "--warmup", "0", "--explain", "0", "--no-report"])
    assert exit_info.value.code == 0
    (result,) = out.iterdir()  # --no-report: the run file alone
    workloads = {entry["workload"] for entry in read_document(result)["entries"]}
    assert workloads == {"video_page", "voice_memos"}
    assert "video_page[app]" in capsys.readouterr().err


BUDGETED = """\
[queries.slow]
sql = "SELECT pg_sleep(0.2)"

[queries.fast]
sql = "SELECT 1"

[scenarios.page]
queries = ["slow", "fast"]
"""


@pytest.mark.slow
def test_an_entry_stops_on_its_time_budget_and_says_so(
    create_database: Callable[[str], str], tmp_path: Path
) -> None:
    """A 0.2 s query under a 0.5 s budget: a few warm-ups, at least ``min_rounds`` timed
    runs and then no more, flagged; a 0.1 ms query in the same run gets its full count."""
    from vpbench.measure.runner import measure_workloads
    from vpbench.workload.spec import load_workloads

    conninfo = create_database("budget")
    path = tmp_path / "budget.toml"
    path.write_text(BUDGETED)
    options = RunOptions(warmup=5, repeat=30, explain=5, max_time_s=0.5, min_rounds=2)
    entries = {e.name: e for e in measure_workloads(conninfo, load_workloads([path], ()), options)}
    slow, fast, page = entries["slow"], entries["fast"], entries["page"]
    assert slow.budget_stopped and 2 <= len(slow.samples_ns) <= 3, len(slow.samples_ns)
    assert 1 <= len(slow.explains) <= 3
    assert page.budget_stopped and len(page.samples_ns) == len(page.member_samples_ns["fast"])
    # the twin: a fast query is not cut short
    assert not fast.budget_stopped and len(fast.samples_ns) == 30 and len(fast.explains) == 5
    document = slow.to_document()
    assert document["budget_stopped"] is True and len(document["samples_ns"]) <= 3


def _wait_for_statement(
    target: ServerTarget, dbname: str, text: str, process: subprocess.Popen[str]
) -> None:
    """Until a session on ``dbname`` runs a statement holding ``text`` (the event, not the
    clock: a loaded machine may take seconds to start the child)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline and process.poll() is None:
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid()", [dbname, f"%{text}%"]
            ).fetchone()  # fmt: skip
            if found and found[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"no statement with {text!r} ran on {dbname} within 60 s")
