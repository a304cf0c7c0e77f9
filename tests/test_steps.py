"""``vpbench steps`` end to end on tiny data: the reference series, an injected failure, and
each check failing on a migration broken on purpose."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import DatabaseFactory, exclusive_lock_up, interruptible, traffic_workload
from vpbench.analysis.verdicts import Threshold
from vpbench.cli.main import main
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.snapshot import snapshot_tables
from vpbench.errors import MigrationError, UnsafeOperationError, WorkloadError
from vpbench.measure.interleave import PairedOptions, balanced_orders
from vpbench.measure.traffic import TrafficOptions
from vpbench.measure.writecost import WriteOptions
from vpbench.reporting.markdown import build_report
from vpbench.results.frames import load
from vpbench.server.backup import CLONE, TEMPLATE, backup_name
from vpbench.server.target import ServerTarget
from vpbench.steps.compatibility import (
    ANY_ORDER,
    BREAKS,
    MIGRATE_FIRST,
    NEW_QUERIES_FIRST,
    RECONNECT,
    check_old_app,
)
from vpbench.steps.indexes import index_gains
from vpbench.steps.model import StepsOptions
from vpbench.steps.phases import PHASES
from vpbench.steps.pipeline import run_steps
from vpbench.steps.summary import index_bytes_added, regressions

REFERENCE = Path(__file__).resolve().parents[1] / "workloads"
LIGHT_TRAFFIC = TrafficOptions(readers=1, writers=1, writes_per_s=50, baseline_s=0.3)
QUICK = StepsOptions(
    paired=PairedOptions(rounds=2, max_rounds=2, repeat=2, warmup=0, explain=1, round_ms=0),
    writes=WriteOptions(rounds=2, repeat=2),
    traffic=LIGHT_TRAFFIC,
)
TINY = get_profile("tiny")

HEADER_WORKLOAD = """\
[params.video]
source = "SELECT id::text FROM videos ORDER BY id"
pool = 10

[queries.video_header]
target_ms = 50
sql = "SELECT id, title FROM videos WHERE id = :video"
"""


def databases(target: ServerTarget, like: str) -> list[str]:
    with psycopg.connect(target.conninfo) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [like])
        return sorted(r[0] for r in rows.fetchall())


def add_migration(folder: Path, name: str, up: str, down: str, extra: str = "") -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "up.sql").write_text(up)
    (folder / name / "down.sql").write_text(down)
    (folder / name / "migration.toml").write_text(f'title = "{name}"\n{extra}')


@pytest.mark.dsn_server
@pytest.mark.slow
def test_the_reference_series(target: ServerTarget, session_prefix: str, tmp_path: Path) -> None:
    name = f"{session_prefix}_steps"
    result = run_steps(
        target,
        name,
        profile=TINY,
        seed=2,
        workload_paths=[REFERENCE / "video_page.toml", REFERENCE / "voice_memos.toml"],
        out_dir=tmp_path,
        options=QUICK,
    )
    assert result.passed, [
        (s.migration.id, s.unexpected_changes, s.reversibility_problems) for s in result.steps
    ]
    ids = [s.migration.id for s in result.steps]
    assert len(ids) == 7 and ids[0] == "0001_quiz_attempt_links"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{i}.json" for i in ids] + ["summary.json"]
    )
    first, _, audio, indexes, _, scores, contract = result.steps
    orphans = first.audit_before.check("orphaned_quiz_attempts").violations
    assert orphans > 0 and first.audit_after.check("orphaned_quiz_attempts").violations == 0
    assert first.quarantined["quiz_attempts"] == orphans
    assert first.rows_before["quiz_attempts"] == first.rows_after["quiz_attempts"] + orphans
    # what its cost grows with: the rows of the tables it locked, and the WAL of rewriting one
    assert first.touched["quiz_attempts"] == first.rows_before["quiz_attempts"]
    assert first.up_wal_bytes > sum(c.bytes_before for c in first.costs if c.kind == "table") / 2
    assert sum(c.added_bytes for c in indexes.costs if c.kind == "index") > 0
    for cost in indexes.writes:  # the new indexes are entries every insert adds
        assert cost.before and cost.after and cost.after.indexes > cost.before.indexes
        assert cost.after.wal_bytes > cost.before.wal_bytes > 0
        assert len(cost.before_ns) == len(cost.after_ns) == 2 * 2
    assert scores.audit_after.check("stale_stored_scores").violations == 0
    assert result.steps[-1].audit_after.total_violations == 0  # the series ends audit clean
    orders = [s.old_app.deploy_order for s in result.steps]
    # 0005 adds jsonb columns beside the text ones (expand): the app's SQL and its prepared
    # INSERTs keep working, so no reconnect.
    # Two expands (0001, 0005) and their contract (0007): the deployed app keeps working
    # across every step; the new queries of 0001 and 0003 read their new columns, and the
    # app with the queries of 0001 and 0005 goes out before the contract drops the text.
    assert orders == [MIGRATE_FIRST, ANY_ORDER, MIGRATE_FIRST, *[ANY_ORDER] * 4]
    contracted = [s.old_app.deploy_before for s in result.steps]
    assert contracted == [contract.migration.id, "", "", "", contract.migration.id, "", ""]
    assert not any(s.old_app.old_app_breaks or s.old_app.declared for s in result.steps)
    # No step declares downtime, and none stalled the app under its traffic.
    assert all(s.availability and s.availability.passed for s in result.steps)
    assert not any(s.migration.max_stall_ms for s in result.steps)
    gains = {g.index.split(".")[1]: g for g in index_gains(indexes)}
    # kept for ON DELETE CASCADE: no query reads it, yet it is not pure cost
    cascade = gains["quiz_attempts_video_idx"]
    assert not cascade.used_by and not cascade.pure_cost
    assert cascade.foreign_keys == ("quiz_attempts_video_uuid_fkey",)
    assert gains["quiz_attempts_user_video_completed_idx"].foreign_keys == (
        "quiz_attempts_user_id_fkey",
    )
    # partial (voice memos only): a delete in videos cannot find every reflection by it
    assert gains["reflections_voice_video_created_idx"].foreign_keys == ()
    assert "quiz_attempts_for_video" in {
        u.query for u in gains["quiz_attempts_user_video_completed_idx"].used_by
    }
    assert audio.audit_after.check("voice_memo_metadata_in_text").violations < (
        audio.audit_before.check("voice_memo_metadata_in_text").violations
    )
    for step in result.steps:
        # a clone on PostgreSQL 18, a template file copy before; backup, rehearsal, after
        assert step.backup_method in (CLONE, TEMPLATE)
        assert [c.name.rsplit("__", 1)[1][:5] for c in step.copies] == ["befor", "load_", "after"]
        assert all(c.method == step.backup_method and c.seconds > 0 for c in step.copies)
        assert set(step.phases) == set(PHASES) and all(v >= 0 for v in step.phases.values())
        for entry in step.before + step.after:
            assert len(entry.samples_ns) == 2 * 2, entry.name
    assert databases(target, f"{name}__%") == []  # backups dropped

    summary = json.loads(result.summary_path.read_text())
    assert summary["kind"] == "steps-summary" and len(summary["steps"]) == 7
    spent = summary["time"]["phases"]
    assert sum(row["seconds"] for row in spent) == pytest.approx(summary["seconds"])
    assert 0 < summary["time"]["harness_share"] < 1
    assert set(summary["answers"]) == {
        "biggest_gain",
        "memory_cost",
        "write_cost",
        "what_broke",
        "downtime",
        "regressions",
    }
    assert summary["answers"]["what_broke"].startswith("nothing")
    # every step was rehearsed under traffic, its statements observed on the server
    for step in result.steps:
        assert step.availability is not None and step.availability.requests > 0, step.migration.id
        assert step.statements and all(r.seconds >= 0 for r in step.statements)
    assert any("AccessExclusiveLock on quiz_attempts" in r.locks for r in first.statements)
    frames = load(tmp_path)
    assert set(frames.entries["state"]) == {"before", "after"}
    assert len(frames.samples) == sum(
        len(e.samples_ns) for s in result.steps for e in s.before + s.after
    )
    report = build_report([tmp_path], tmp_path / "report").read_text()
    assert "### Under live traffic" in report and "### Where the time went" in report
    assert "### The old app on the new schema" in report
    assert "### Which index gave the gain" in report
    assert re.search(r"`public.quiz_attempts_video_idx` \| [^|]+ \| no workload query; serves "
                     r"the foreign key `quiz_attempts_video_uuid_fkey`", report)  # fmt: skip
    timeline = tmp_path / "report" / "timeline-0001_quiz_attempt_links.png"
    assert "(timeline-0001_quiz_attempt_links.png)" in report
    assert timeline.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and timeline.stat().st_size > 10_000
    index_step = next(r for r in report.splitlines() if r.startswith("| `0004_video_page_indexes`"))
    assert "quiz_attempts: WAL" in index_step and "sees ±" in index_step
    assert re.search(r"\| \+\d+\.\d (kB|MB) \|", index_step)  # index size in human units
    assert not re.search(r"\d{1,3}(,\d{3})+ B", report)


@pytest.mark.slow
def test_a_failing_step_restores_the_backup(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    name = f"{session_prefix}_steps_fail"
    migrations = tmp_path / "migrations"
    add_migration(
        migrations,
        "0001_add_column",
        "ALTER TABLE videos ADD COLUMN note text;",
        "ALTER TABLE videos DROP COLUMN note;",
    )
    add_migration(
        migrations, "0002_broken", "UPDATE videos SET note = 'x';\nSELECT 1/0;\n", "SELECT 1;"
    )
    workload = tmp_path / "header.toml"
    workload.write_text(HEADER_WORKLOAD)
    with pytest.raises(MigrationError) as error:
        run_steps(
            target,
            name,
            profile=TINY,
            seed=1,
            workload_paths=[workload],
            migrations_dir=migrations,
            out_dir=tmp_path / "out",
            options=QUICK,
        )
    message = str(error.value)
    assert (
        "0002_broken/up.sql:2: migration 0002_broken up failed: division by zero in `SELECT 1/0;`"
        in message
    )
    assert re.search(r"restored from its backup \((clone|template copy)\)", message)
    with psycopg.connect(target.for_database(name)) as conn:
        assert conn.execute("SELECT count(*) FROM videos WHERE note IS NOT NULL").fetchone() == (0,)
        ledger = conn.execute("SELECT id FROM vpbench.migrations").fetchall()
        rows = snapshot_tables(conn)
    assert ledger == [("0001_add_column",)]
    assert rows["videos"].rows == TINY.videos
    assert databases(target, f"{name}__%") == []  # the backup became the database
    assert (tmp_path / "out" / "0001_add_column.json").is_file()


@pytest.mark.slow
def test_each_check_fails_on_a_broken_migration(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    add_migration(
        migrations,
        "0001_down_forgets_index",
        "CREATE INDEX videos_title_idx ON videos (title);",
        "SELECT 1;",
    )
    add_migration(
        migrations, "0002_deletes_rows", "DELETE FROM reflections WHERE kind = 'text';", "SELECT 1;"
    )
    add_migration(
        migrations,
        "0003_renames_videos",
        "UPDATE videos SET title = title || ' (new)';",
        "UPDATE videos SET title = left(title, -6);",
    )
    add_migration(
        migrations,
        "0004_renames_on_purpose",
        "UPDATE videos SET title = title || ' (2)';",
        "UPDATE videos SET title = left(title, -4);",
        'changes_results = ["video_header"]\n',
    )
    add_migration(  # up writes nothing, so the state after keeps every table's snapshot;
        migrations,  # down's delete must still be read, and caught
        "0005_down_loses_a_row",
        "SELECT 1;",
        "DELETE FROM reflections WHERE id = (SELECT id FROM reflections ORDER BY id LIMIT 1);",
    )
    workload = tmp_path / "header.toml"
    workload.write_text(HEADER_WORKLOAD)
    result = run_steps(
        target,
        f"{session_prefix}_steps_broken",
        profile=TINY,
        seed=1,
        workload_paths=[workload],
        migrations_dir=migrations,
        out_dir=tmp_path / "out",
        options=QUICK,
    )
    forgets, deletes, renames, on_purpose, loses = result.steps
    assert not forgets.reversible
    assert any("videos_title_idx" in p for p in forgets.reversibility_problems)
    assert forgets.data_intact and not forgets.unexpected_changes
    assert not deletes.data_intact and not deletes.reversible
    assert renames.reversible and renames.data_intact
    assert renames.unexpected_changes and renames.unexpected_changes[0].startswith("video_header")
    assert on_purpose.passed
    assert not loses.reversible and loses.data_intact
    assert any(p.startswith("reflections: ") and p.endswith("after down")
               for p in loses.reversibility_problems), loses.reversibility_problems  # fmt: skip
    assert not result.passed
    summary = json.loads(result.summary_path.read_text())
    broke = summary["answers"]["what_broke"]
    assert "0001_down_forgets_index: not reversible" in broke
    assert "0002_deletes_rows: not reversible, rows lost" in broke


OLD_APP_WORKLOAD = """\
[params.video]
source = "SELECT id::text FROM videos ORDER BY id"
pool = 10

[queries.video_header]
target_ms = 50
sql = "SELECT id, title FROM videos WHERE id = :video"

[[queries.video_header.variants]]
from = "0001_rename_title"
sql = "SELECT id, name AS title FROM videos WHERE id = :video"

[[queries.video_header.variants]]
from = "0003_rename_back"
sql = "SELECT id, title FROM videos WHERE id = :video"

[[queries.video_header.variants]]
from = "0004_add_note"
sql = "SELECT id, title, note FROM videos WHERE id = :video"

[[queries.video_header.variants]]
from = "0005_drop_note"
sql = "SELECT id, title FROM videos WHERE id = :video"

[queries.recent_reflections]
target_ms = 50
sql = "SELECT id, created_at FROM reflections ORDER BY created_at DESC LIMIT 5"
"""


@pytest.mark.slow
def test_the_old_app_on_the_new_schema_and_which_index_gave_the_gain(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    rename = "ALTER TABLE videos RENAME COLUMN {} TO {};"
    add_migration(migrations, "0001_rename_title", rename.format("title", "name"),
                  rename.format("name", "title"))  # fmt: skip
    add_migration(
        migrations,
        "0002_indexes",
        "CREATE INDEX CONCURRENTLY reflections_created_idx ON reflections (created_at DESC);\n"
        "CREATE INDEX CONCURRENTLY videos_duration_idx ON videos (duration_seconds);\n",
        "DROP INDEX CONCURRENTLY videos_duration_idx;\n"
        "DROP INDEX CONCURRENTLY reflections_created_idx;\n",
        "transactional = false\n",
    )
    add_migration(migrations, "0003_rename_back", rename.format("name", "title"),
                  rename.format("title", "name"),
                  'breaks_old_app = "the page reads the renamed column"\n')  # fmt: skip
    add_migration(migrations, "0004_add_note", "ALTER TABLE videos ADD COLUMN note text;",
                  "ALTER TABLE videos DROP COLUMN note;")  # fmt: skip
    add_migration(migrations, "0005_drop_note", "ALTER TABLE videos DROP COLUMN note;",
                  "ALTER TABLE videos ADD COLUMN note text;")  # fmt: skip
    workload = tmp_path / "page.toml"
    workload.write_text(OLD_APP_WORKLOAD)
    result = run_steps(
        target,
        f"{session_prefix}_steps_old_app",
        profile=TINY,
        seed=1,
        workload_paths=[workload],
        migrations_dir=migrations,
        out_dir=tmp_path / "out",
        options=StepsOptions(paired=QUICK.paired, writes=QUICK.writes, traffic=None),
    )
    renamed, indexed, renamed_back, added, dropped = result.steps
    assert [s.old_app.deploy_order for s in result.steps] == [
        BREAKS, ANY_ORDER, BREAKS, MIGRATE_FIRST, NEW_QUERIES_FIRST
    ]  # fmt: skip
    assert renamed.old_app.old_app_breaks[0].startswith("video_header: failed: column")
    # Undeclared breaks fail the step; the declared one (with its reason) passes.
    assert renamed.old_app.undeclared and not renamed.passed
    assert not renamed_back.old_app.undeclared and renamed_back.passed
    assert dropped.old_app.undeclared and not dropped.passed
    assert added.passed and indexed.passed and not result.passed
    gains = {g.index: g for g in index_gains(indexed)}
    assert set(gains) == {"public.reflections_created_idx", "public.videos_duration_idx"}
    used = gains["public.reflections_created_idx"]
    assert [u.query for u in used.used_by] == ["recent_reflections"] and not used.pure_cost
    assert used.bytes > 0 and used.write is not None and used.write.table == "reflections"
    assert gains["public.videos_duration_idx"].pure_cost  # nothing reads it, serves no key
    assert gains["public.videos_duration_idx"].foreign_keys == ()
    assert index_gains(added) == ()  # the twin: a step without an index has none
    report = build_report([tmp_path / "out"], tmp_path / "report").read_text()
    assert "the page reads the renamed column" in report and "**not declared**" in report
    assert re.search(r"`public.videos_duration_idx` \| [^|]+ \| \*\*pure cost\*\*", report)


def test_requests_that_failed_under_load_count_unless_a_constraint_refused_them(
    create_database: DatabaseFactory,
) -> None:
    conninfo = create_database("old_app_load")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE quiz_attempts (id uuid PRIMARY KEY, score int)")
        conn.execute("INSERT INTO quiz_attempts VALUES (gen_random_uuid(), 1)")
        refused = {"write error 23514": 4, "write lock_timeout 55P03": 1}
        clean = check_old_app(conn, conn, [], {}, [], [], failed=refused)
        # The twin: the same step, with writes failing on a changed column type.
        broken = check_old_app(conn, conn, [], {}, [], [],
                               failed={**refused, "write error 42804": 7})  # fmt: skip
    assert [i.result for i in clean.inserts] == ["works"]
    assert clean.deploy_order == ANY_ORDER and not clean.undeclared
    assert clean.refused_under_load == ("4 write error 23514",)
    assert broken.deploy_order == RECONNECT and broken.undeclared
    assert broken.old_app_breaks == ("under load: 7 write error 42804",)


@pytest.mark.slow
def test_cli_steps(
    target: ServerTarget,
    session_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    create_database: DatabaseFactory,
) -> None:
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "steps",
                "--profile",
                "tiny",
                "--db",
                f"{session_prefix}_cli_steps",
                "--rounds",
                "2",
                "--max-rounds",
                "2",
                "--repeat",
                "2",
                "--to",
                "0002_reflection_links",
                "--out",
                str(out),
            ]
        )
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    # Full step names: a narrow column wraps them rather than cutting them short.
    assert "0002_reflection_links" in captured.out.replace("\n", "").replace("│", "").replace(
        " ", ""
    )
    assert "…" not in captured.out
    for text in ("video_page p95", "voice_memos", "biggest gain", "what broke"):
        assert text in captured.out
    assert "step 2/2: 0002_reflection_links" in captured.err
    assert sorted(p.name for p in out.glob("*.json")) == [
        "0001_quiz_attempt_links.json",
        "0002_reflection_links.json",
        "summary.json",
    ]
    # The main job draws its charts: report.md beside the documents, images it links to.
    report = out / "report.md"
    assert f"report: {report}" in captured.out.replace("\n", "")
    text = report.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert "steps-latency.png" in images and all((out / image).is_file() for image in images)

    conninfo = create_database("steps_foreign")
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE precious (id int)")
    foreign = str(psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])
    with pytest.raises(UnsafeOperationError, match="refusing to run steps on"):
        run_steps(
            target,
            foreign,
            profile=TINY,
            seed=1,
            workload_paths=[],
            options=QUICK,
            out_dir=tmp_path / "o2",
        )


@pytest.mark.slow
def test_ctrl_c_mid_step_keeps_the_backup_and_a_consistent_ledger(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    name = f"{session_prefix}_steps_sigint"
    process = subprocess.Popen(
        [sys.executable, "-m", "vpbench", "steps", "--profile", "tiny", "--db", name,
         "--rounds", "50", "--repeat", "20", "--out", str(tmp_path / "out")],
        env={**os.environ, "VPBENCH_DSN": target.conninfo, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "in paired rounds" in line:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, rest
    assert "Traceback" not in rest
    backup = backup_name(name, "before_0001_quiz_attempt_links")
    assert f"the state before this step is kept in database {backup}" in rest
    assert databases(target, backup) == [backup]
    assert databases(target, f"{name}__after%") == []  # the measured copy is dropped
    with psycopg.connect(target.for_database(name)) as conn:
        ledger = conn.execute("SELECT id FROM vpbench.migrations").fetchall()
        quarantined = conn.execute("SELECT count(*) FROM quarantine.quiz_attempts").fetchone()
    assert ledger == [("0001_quiz_attempt_links",)] and quarantined and quarantined[0] > 0
    with psycopg.connect(target.for_database(backup)) as conn:
        assert conn.execute("SELECT to_regclass('vpbench.migrations')").fetchone() == (None,)


@pytest.mark.parametrize("rounds", [1, 2, 5, 6, 30])
def test_interleaving_puts_each_state_first_equally_often(rounds: int) -> None:
    orders = balanced_orders(rounds, seed=3)
    assert len(orders) == rounds
    assert all(sorted(order) == ["after", "before"] for order in orders)
    firsts = [order[0] for order in orders]
    assert abs(firsts.count("before") - firsts.count("after")) <= rounds % 2
    assert orders == balanced_orders(rounds, seed=3)
    if rounds >= 6:
        assert orders != balanced_orders(rounds, seed=4)  # random within the balance


NULL_CHECK = StepsOptions(
    # Ten rounds: a verdict's interval is over rounds, and with four of them a burst of load
    # on a shared machine that landed on one side twice read 1.27x [1.25, 1.93] between two
    # identical copies (the CPU-burn step, while three other jobs ran).
    paired=PairedOptions(rounds=10, max_rounds=10, repeat=3, explain=2, round_ms=20),
    writes=WriteOptions(rounds=12, repeat=2),  # six read 2.44x between identical copies once
    traffic=LIGHT_TRAFFIC,  # rehearsed on a copy: the measured states never see it
    # Timing verdicts are checked at 5% by bench/null_steps.py over hundreds of judgements;
    # here a wide threshold keeps the test about structure: a biased instrument (the old
    # write probe's bloat read 1.33x) still fails it, noise never does.
    threshold=Threshold("median", 0.20),
)


LEGACY_PAGE = """\
[workload]
name = "legacy_page"

[params.viewer]
source = '''
SELECT user_id::text AS user_id, video_id::text AS video_id FROM quiz_attempts
GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 50
'''
provides = ["user_id", "video_id"]
distribution = "zipf"

[queries.attempts]
sql = '''
SELECT id, score, percentage, completed_at FROM quiz_attempts
WHERE user_id = :user_id AND video_id = :video_id ORDER BY completed_at DESC LIMIT 20
'''

[queries.reflections]
sql = '''
SELECT id, kind, created_at FROM reflections
WHERE user_id = :user_id ORDER BY created_at DESC LIMIT 50
'''

[queries.voice_memos]
sql = '''
SELECT r.id, u.display_name, substring(r.content from '^Voice memo \\(([0-9]+)s') AS seconds
FROM reflections r JOIN users u ON u.id = r.user_id
WHERE r.video_id::text = :video_id AND r.kind = 'voice' ORDER BY r.created_at DESC LIMIT 10
'''

[scenarios.page]
queries = ["attempts", "reflections", "voice_memos"]
"""


CPU_BURN = """DO $$
DECLARE stop timestamptz := clock_timestamp() + interval '3 s'; x text;
BEGIN
    WHILE clock_timestamp() < stop LOOP x := md5(random()::text); END LOOP;
END $$;"""
"""holds no lock the app needs and keeps a core busy for 3 s"""


def _noop_and_index(folder: Path) -> Path:
    add_migration(folder, "0001_noop", "SELECT 1;", "SELECT 1;")
    add_migration(
        folder,
        "0002_index_reflections",
        "CREATE INDEX reflections_created_at_idx ON reflections (created_at);",
        "DROP INDEX reflections_created_at_idx;",
    )
    add_migration(folder, "0003_cpu_burn", CPU_BURN, "SELECT 1;")
    return folder


@pytest.mark.slow
def test_a_migration_that_changes_nothing_reads_zero(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    workload = tmp_path / "legacy_page.toml"
    workload.write_text(LEGACY_PAGE)
    result = run_steps(
        target,
        f"{session_prefix}_null",
        profile=TINY,
        seed=4,
        workload_paths=[workload],
        migrations_dir=_noop_and_index(tmp_path / "migrations"),
        out_dir=tmp_path / "out",
        options=NULL_CHECK,
    )
    noop, index, burn = result.steps
    # Deterministic: nothing grew, plans and buffers are the same, so is every write figure.
    assert noop.costs == () and index_bytes_added(noop) == 0 and index_gains(noop) == ()
    assert noop.touched == {}  # it locked nothing: no table it grows with
    if noop.up_wal_scope == "session":  # PostgreSQL 18: the ledger's row, nothing else
        assert noop.up_wal_bytes < 8192 < index.up_wal_bytes, (
            noop.up_wal_bytes,
            index.up_wal_bytes,
            burn.up_wal_bytes,
        )
    assert index.up_wal_bytes > index_bytes_added(index) / 2
    assert set(index.touched) == {"reflections"}
    assert noop.old_app.deploy_order == ANY_ORDER and not noop.old_app.old_app_breaks
    assert not noop.settled_after.changed  # nothing for VACUUM or ANALYZE to redo
    for before, after in zip(noop.before, noop.after, strict=True):
        assert before.plan_summaries.keys() == after.plan_summaries.keys()
        for query, summary in before.plan_summaries.items():
            assert after.plan_summaries[query].fingerprint == summary.fingerprint, query
        assert [e.shared_hit_blocks + e.shared_read_blocks for e in before.explains] == [
            e.shared_hit_blocks + e.shared_read_blocks for e in after.explains
        ], before.name
    assert [w.table for w in noop.writes] == ["quiz_attempts", "reflections"]
    for cost in noop.writes:
        assert cost.error is None and cost.before is not None and cost.before == cost.after
        assert not cost.changed and cost.wal_change == 0
    # No verdict either way, so the summary names the no-op for nothing.
    assert noop.verdicts.entries.keys() == {e.name for e in noop.after}
    for name, judgement in noop.verdicts.entries.items():
        assert judgement.verdict not in ("faster", "slower"), name
    assert not regressions(noop)
    summary = json.loads(result.summary_path.read_text())
    answers = summary["answers"]
    assert "0001_noop" not in " ".join(answers.values())
    assert answers["biggest_gain"].startswith("no change")
    assert answers["regressions"].startswith("none")

    # The twin: one index on reflections must read as a cost, in bytes and in WAL per insert.
    assert index_bytes_added(index) > 0
    assert answers["memory_cost"].startswith("0002_index_reflections added")
    by_table = {w.table: w for w in index.writes}
    reflections, quiz = by_table["reflections"], by_table["quiz_attempts"]
    assert reflections.before and reflections.after
    assert reflections.after.indexes == reflections.before.indexes + 1
    assert reflections.after.wal_bytes > reflections.before.wal_bytes
    assert reflections.after.wal_records == reflections.before.wal_records + 1
    assert quiz.before == quiz.after  # the other table's writes did not change
    assert answers["write_cost"].startswith("0002_index_reflections: reflections inserts write +")

    # Availability reads zero too: the no-op blocks nothing and fails no request ...
    assert noop.availability is not None and noop.availability.passed
    assert noop.availability.blocked_ms == {"read": 0.0, "write": 0.0}
    assert noop.availability.failed == {}
    # ... and its twin, a step that burns a core for 3 s but takes no lock the app needs,
    # slows the app (reported, with at-rest latencies to compare) and blocks nothing: it
    # passes the 1 s budget however busy the machine was. (The failing twin, a lock held
    # 3 s, is test_a_step_that_blocks_the_app_fails_availability.)
    found = burn.availability
    assert found is not None and found.passed and burn.passed
    assert found.blocked == {"read": None, "write": None}
    assert found.slowed["read"].at_rest > 0 and found.slowed["read"].requests > 0
    assert found.slowed["read"].ratio is not None
    assert "0003_cpu_burn" not in answers["what_broke"]


def _stalling_series(folder: Path, toml: str) -> Path:
    step = folder / "0001_exclusive"
    step.mkdir(parents=True)
    (step / "up.sql").write_text(exclusive_lock_up(3))
    (step / "down.sql").write_text("SELECT 1;\n")
    (step / "migration.toml").write_text('title = "holds quiz_attempts"\n' + toml)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("toml", "code"),
    [("", 1), ('max_stall = "10s"\ndowntime = "a maintenance window is booked"\n', 0)],
)
def test_a_step_that_blocks_the_app_fails_availability(
    target: ServerTarget,
    session_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    code: int,
) -> None:
    """An exclusive lock held for 3 s blocks reads and writes beyond a 1 s budget: the step
    fails, naming the statement, the lock and the relation; declared downtime allows it."""
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    monkeypatch.setenv("COLUMNS", "200")
    migrations = _stalling_series(tmp_path / "migrations", toml)
    workload = traffic_workload(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([
            "steps", "--profile", "tiny", "--db", f"{session_prefix}_stall_{code}",
            "--migrations", str(migrations), "--workload", str(workload),
            "--rounds", "2", "--max-rounds", "2", "--repeat", "1", "--max-stall", "1s",
            "--out", str(tmp_path / "out"),
        ])  # fmt: skip
    captured = capsys.readouterr()
    assert exit_info.value.code == code, captured.err
    document = json.loads((tmp_path / "out" / "0001_exclusive.json").read_text())
    found = document["availability"]
    assert found["passed"] is (code == 0)
    assert min(found["blocked_ms"].values()) >= 2000
    for kind in ("read", "write"):
        blocked = found["blocked"][kind]
        assert blocked["migration_holds"] == "AccessExclusiveLock"
        assert blocked["waited_for"].endswith("on quiz_attempts")
        assert blocked["statement"] == "SELECT pg_sleep(3)"
        assert blocked["low_ms"] <= blocked["ms"] <= blocked["high_ms"]
        # the slowed figure sits beside it, per kind, with its sample sizes
        assert set(found["slowed"][kind]) >= {"ratio", "low", "high", "requests", "at_rest"}
    assert f"budget {1 if code else 10} s" in captured.out  # the console's "under load" column
    assert "blocked reads" in captured.out and "slowed reads" in captured.out
    holds = {h["lock"]: h for h in document["lock_holds"]}
    assert holds["AccessExclusiveLock on quiz_attempts"]["line"] == 1
    if code:
        assert "stalls the app" in captured.out and "SELECT pg_sleep(3)" in captured.out
    else:
        assert "0001_exclusive: may stall the app 10 s (blocked" in captured.out
        report = build_report([tmp_path / "out"], tmp_path / "report").read_text()
        assert "- `0001_exclusive` (10 s): a maintenance window is booked" in report


@pytest.mark.slow
def test_ctrl_c_under_load_ends_the_traffic_and_keeps_the_backup(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    name = f"{session_prefix}_load_sigint"
    migrations = tmp_path / "migrations"
    add_migration(
        migrations,
        "0001_exclusive",
        exclusive_lock_up(4),
        "SELECT 1;\n",
        'max_stall = "1min"\ndowntime = "test"\n',
    )
    workload = traffic_workload(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "vpbench", "steps", "--profile", "tiny", "--db", name,
         "--migrations", str(migrations), "--workload", str(workload),
         "--out", str(tmp_path / "out")],
        env={**os.environ, "VPBENCH_DSN": target.conninfo, "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "rehearsing up" in line:
            break
    with psycopg.connect(target.conninfo, autocommit=True) as watcher:
        for _ in range(200):  # until a traffic session queues behind the migration's lock
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                "'vpbench-traffic %%' AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the traffic never waited for the migration")
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
        assert process.returncode == 130, rest
        assert "Traceback" not in rest
        left = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE %s",
            [f"{name}%"],
        ).fetchone()
    assert left == (0,)  # no traffic, sampler or migration session left behind
    backup = backup_name(name, "before_0001_exclusive")
    assert databases(target, backup) == [backup]
    assert databases(target, f"{name}__%load%") == []  # the rehearsal copy is dropped


def test_a_variant_the_new_schema_refuses_stops_the_step_before_its_timing(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    """The variant in force after 0001 is prepared on the migrated database right after
    the step is applied: its missing column fails the run there, with its file line, and
    no step document is written."""
    workload = tmp_path / "w.toml"
    workload.write_text(
        "[queries.attempts]\n"
        'sql = "SELECT count(*) FROM quiz_attempts"\n'
        "\n"
        "[[queries.attempts.variants]]\n"
        'from = "0001_quiz_attempt_links"\n'
        'sql = "SELECT count(no_such_column) FROM quiz_attempts"\n'
    )
    out = tmp_path / "out"
    with pytest.raises(WorkloadError) as error:
        run_steps(target, f"{session_prefix}_variant", profile=TINY, seed=1,
                  workload_paths=[workload], options=QUICK, out_dir=out,
                  to="0001_quiz_attempt_links")  # fmt: skip
    assert str(error.value) == (
        f"{workload}:6: query 'attempts' (variant from 0001_quiz_attempt_links): "
        'column "no_such_column" does not exist [SQLSTATE 42703]'
    )
    assert list(out.glob("*.json")) == []


@pytest.mark.slow
def test_down_runs_on_a_copy_so_a_lossy_down_never_reaches_the_working_database(
    target: ServerTarget,
    session_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """0001's down leaves its table behind, so its up could not run again after it: the
    reversibility check runs down on the copy of the state after, finds the table there,
    and fails the step (exit 1). The working database never went down, so 0002 is applied
    to the schema 0001 left, and no copy is left over."""
    name = f"{session_prefix}_reup"
    migrations = tmp_path / "migrations"
    add_migration(migrations, "0001_leaves_a_table", "CREATE TABLE once (id int);", "SELECT 1;")
    add_migration(migrations, "0002_next", "CREATE TABLE twice (id int);", "DROP TABLE twice;")
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([
            "steps", "--profile", "tiny", "--db", name, "--migrations", str(migrations),
            "--workload", str(traffic_workload(tmp_path)), "--rounds", "2", "--max-rounds", "2",
            "--repeat", "1", "--no-traffic", "--no-report", "--out", str(out),
        ])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 1, err
    assert "Traceback" not in err
    first = json.loads((out / "0001_leaves_a_table.json").read_text())["checks"]
    assert not first["reversible"]
    assert any("once" in problem for problem in first["reversibility_problems"])
    second = json.loads((out / "0002_next.json").read_text())["checks"]
    assert second["reversible"] and second["passed"]
    with psycopg.connect(target.for_database(name)) as conn:
        applied = conn.execute("SELECT id FROM vpbench.migrations ORDER BY id").fetchall()
        tables = conn.execute(
            "SELECT to_regclass('once') IS NOT NULL, to_regclass('twice') IS NOT NULL"
        ).fetchone()
    assert applied == [("0001_leaves_a_table",), ("0002_next",)] and tables == (True, True)
    assert databases(target, f"{name}\\_\\_%") == []
