"""The reference series' batched backfills on a live table (0003_voice_memo_metadata,
0005_quiz_jsonb): stopped with Ctrl-C part-way, a step's down.sql restores the state before
it and running it again ends with every row done once; the rows the app commits while it
runs are done by its trigger, and so is a stored row the app updates before its batch.

A backfill is held at a chosen row, not timed: a trigger of the test's own makes the batch
that updates that row wait for an advisory lock the test holds, so "part-way" is the same
place on every machine."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from conftest import interruptible
from test_reference_migrations import assert_same, capture, expected_audio
from vpbench.dataset.fixtures import fixtures_dir
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.traffic import LiveTraffic, TrafficOptions, apply_under_load
from vpbench.migrations.apply import apply_step
from vpbench.migrations.ledger import applied_migrations, ensure_ledger
from vpbench.migrations.locking import DEFAULT_LOCKS
from vpbench.migrations.sources import discover_migrations
from vpbench.server.target import ServerTarget

Conn = psycopg.Connection[tuple[Any, ...]]

HOLD_KEY = 250_003
SMALL_BATCHES = "-c backfill.batch_rows=20 -c backfill.pause_ms=0"
"""tiny has a few hundred voice memos and a few thousand attempts: batches of 20 make each
backfill many of them"""

_numbers = itertools.count(1)


def memos_parsed(conn: Conn) -> None:
    """Every voice memo holds what its header says (or is flagged malformed), proven."""
    for content, status, *audio in conn.execute(
        "SELECT content, audio_header_status, audio_duration_seconds, audio_format, "
        "audio_size_bytes, audio_url FROM reflections WHERE kind = 'voice'"
    ):
        expected = expected_audio(content)
        assert tuple(audio) == expected, content
        assert status == ("malformed" if expected[0] is None else "parsed"), content
    assert validated(conn, "reflections_audio_header_check")


def documents_filled(conn: Conn) -> None:
    """Every attempt's jsonb is its text parsed, proven to be arrays."""
    wrong = conn.execute(
        "SELECT count(*) FROM quiz_attempts WHERE questions_json IS DISTINCT FROM "
        "questions::jsonb OR answers_json IS DISTINCT FROM answers::jsonb"
    ).fetchone()
    assert wrong == (0,)
    assert validated(conn, "quiz_attempts_questions_json_check")
    assert validated(conn, "quiz_attempts_answers_json_check")


def attempts_linked(conn: Conn) -> None:
    """Every attempt's uuid links are its text links, NOT NULL, by validated foreign keys."""
    assert conn.execute(
        "SELECT count(*) FROM quiz_attempts WHERE video_uuid IS DISTINCT FROM video_id::uuid "
        "OR course_uuid IS DISTINCT FROM course_id::uuid"
    ).fetchone() == (0,)
    for key in ("video_uuid", "course_uuid", "user_id"):
        assert validated(conn, f"quiz_attempts_{key}_fkey")


def links_repaired(conn: Conn) -> None:
    """Every reflection links a video and a course, NOT NULL, by validated foreign keys."""
    assert conn.execute(
        "SELECT count(*) FROM reflections WHERE video_id IS NULL OR course_id IS NULL"
    ).fetchone() == (0,)
    for key in ("video_id", "course_id", "user_id"):
        assert validated(conn, f"reflections_{key}_fkey")
    nullable = conn.execute(
        "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'reflections'::regclass "
        "AND attname IN ('video_id', 'course_id') ORDER BY 1"
    ).fetchall()
    assert nullable == [("course_id", True), ("video_id", True)]


def scores_computed(conn: Conn) -> None:
    """Every stored score is the one its answers give, proven by the validated CHECK."""
    assert conn.execute(f"SELECT count(*) FROM ({STALE}) AS stale").fetchone() == (0,)
    assert validated(conn, "quiz_attempts_scores_computed_check")


def validated(conn: Conn, constraint: str) -> bool:
    found = conn.execute(
        "SELECT convalidated FROM pg_constraint WHERE conname = %s", [constraint]
    ).fetchall()
    return found == [(True,)]


NEEDS_LINKS = (
    "SELECT r.id::text FROM reflections r WHERE r.video_id IS NULL OR r.course_id IS NULL "
    "OR NOT EXISTS (SELECT FROM videos v WHERE v.id = r.video_id) "
    "OR NOT EXISTS (SELECT FROM courses c WHERE c.id = r.course_id) "
    "OR NOT EXISTS (SELECT FROM users u WHERE u.id = r.user_id)"
)
"""reflections 0002 has to derive a course link for or quarantine"""
STALE = (
    "SELECT id::text FROM quiz_attempts WHERE (score, total, percentage) IS DISTINCT FROM "
    "(public.quiz_attempt_score(questions_json, answers_json), "
    "public.quiz_attempt_total(questions_json), "
    "public.quiz_attempt_percentage(questions_json, answers_json))"
)
"""attempts whose stored scores 0006 has still to correct (once its functions exist)"""


@dataclass(frozen=True)
class Backfill:
    step: str
    table: str
    todo: str
    """before the step: the rows it has to change (``SELECT id::text ...``)"""
    done: str
    """once it has started: the rows it has changed"""
    undone: str
    """once it has started: the rows it has still to change"""
    kept: str
    """after it: every row of the table, in it or in its quarantine"""
    reported: str
    """its closing NOTICE, with the count(s) of rows it changed as groups"""
    check: Callable[[Conn], None]
    """every row is done, and done right"""
    prepare: str = ""
    """run on the held row (``{held}``) before the step: a row the step has to change"""
    trigger: bool = True
    """it installs a trigger that does the same to every row the app writes"""
    exact: bool = True
    """its closing counts add up to the rows it changed (no row is counted twice)"""

    def ids(self, conn: Conn, query: str) -> set[str]:
        return {r[0] for r in conn.execute(query.encode())}


QUIZ_LINKS = Backfill(
    "0001_quiz_attempt_links",
    "quiz_attempts",
    todo="SELECT id::text FROM quiz_attempts",
    done="SELECT id::text FROM quiz_attempts WHERE video_uuid IS NOT NULL UNION "
    "SELECT id::text FROM quarantine.quiz_attempts",
    undone="SELECT id::text FROM quiz_attempts WHERE video_uuid IS NULL",
    kept="SELECT id::text FROM quiz_attempts "
    "UNION ALL SELECT id::text FROM quarantine.quiz_attempts",
    reported=r"0001_quiz_attempt_links: quarantined (\d+) and linked (\d+) quiz attempt\(s\) in",
    check=attempts_linked,
)
LINKS = Backfill(
    "0002_reflection_links",
    "reflections",
    todo=NEEDS_LINKS,
    done="SELECT id::text FROM quarantine.reflections UNION "
    "SELECT reflection_id::text FROM archive.reflection_course_backfill",
    undone=NEEDS_LINKS,
    kept="SELECT id::text FROM reflections UNION ALL SELECT id::text FROM quarantine.reflections",
    reported=r"0002_reflection_links: derived (\d+) course link\(s\), quarantined (\d+) ",
    check=links_repaired,
    trigger=False,  # constraints refuse the app's broken links instead
    exact=False,  # a reflection whose course it derives and then quarantines counts in both
)
METADATA = Backfill(
    "0003_voice_memo_metadata",
    "reflections",
    todo="SELECT id::text FROM reflections WHERE kind = 'voice'",
    done="SELECT id::text FROM reflections WHERE audio_header_status IS NOT NULL",
    undone="SELECT id::text FROM reflections WHERE kind = 'voice' AND audio_header_status IS NULL",
    kept="SELECT id::text FROM reflections",
    reported=r"0003_voice_memo_metadata: parsed (\d+) voice memo\(s\) in",
    check=memos_parsed,
)
JSONB = Backfill(
    "0005_quiz_jsonb",
    "quiz_attempts",
    todo="SELECT id::text FROM quiz_attempts",
    done="SELECT id::text FROM quiz_attempts WHERE questions_json IS NOT NULL",
    undone="SELECT id::text FROM quiz_attempts WHERE questions_json IS NULL",
    kept="SELECT id::text FROM quiz_attempts",
    reported=r"0005_quiz_jsonb: filled (\d+) quiz attempt\(s\) in",
    check=documents_filled,
)
SCORES = Backfill(
    "0006_computed_scores",
    "quiz_attempts",
    todo="SELECT id::text FROM quiz_attempts",
    done="SELECT quiz_attempt_id::text FROM archive.quiz_attempt_stored_scores",
    undone=STALE,
    kept="SELECT id::text FROM quiz_attempts",
    reported=r"0006_computed_scores: corrected (\d+) quiz attempts whose",
    check=scores_computed,
    prepare="UPDATE quiz_attempts SET score = score + 1 WHERE id = '{held}'",
)
BACKFILLS = {b.step: b for b in (QUIZ_LINKS, LINKS, METADATA, JSONB, SCORES)}


@dataclass(frozen=True)
class AppUpdate:
    """The deployed app's update of one stored row, leaving what the step derives as it
    was (its completion time, say)."""

    rows: str
    """before the step: rows the step will repair, not quarantine (``SELECT id::text ...``)"""
    update: str
    """the app's UPDATE of the row ``%s``"""
    prepare: str = ""
    """run on the row (``%s``) before the step: makes it one the step has to change"""


ATTEMPT_COMPLETED = "UPDATE quiz_attempts SET completed_at = '2001-02-03 04:05:06+00' WHERE id = %s"
APP_UPDATES = {
    QUIZ_LINKS.step: AppUpdate(
        "SELECT q.id::text FROM quiz_attempts q JOIN videos v ON v.id::text = q.video_id "
        "JOIN courses c ON c.id::text = q.course_id JOIN users u ON u.id = q.user_id",
        ATTEMPT_COMPLETED,
    ),
    LINKS.step: AppUpdate(
        "SELECT r.id::text FROM reflections r JOIN videos v ON v.id = r.video_id "
        "JOIN users u ON u.id = r.user_id WHERE r.course_id IS NULL",
        "UPDATE reflections SET content = 'edited by the deployed app' WHERE id = %s",
    ),
    METADATA.step: AppUpdate(
        "SELECT id::text FROM reflections WHERE kind = 'voice'",
        "UPDATE reflections SET created_at = '2001-02-03 04:05:06+00' WHERE id = %s",
    ),
    JSONB.step: AppUpdate(JSONB.todo, ATTEMPT_COMPLETED),
    SCORES.step: AppUpdate(
        SCORES.todo,
        ATTEMPT_COMPLETED,
        prepare="UPDATE quiz_attempts SET score = score + 1 WHERE id = %s",
    ),
}


@dataclass(frozen=True)
class Legacy:
    name: str
    conn: Conn
    held_row: str
    """the row whose batch waits while the test holds HOLD_KEY"""


def before_step(target: ServerTarget, session_prefix: str, backfill: Backfill) -> Legacy:
    """A seeded tiny database migrated up to the step before ``backfill``, with the hold
    trigger on the row in the middle of its id order."""
    name = f"{session_prefix}_backfill_{next(_numbers)}"
    seed_database(target, name, get_profile("tiny"), seed=5)
    conn = psycopg.connect(target.for_database(name), autocommit=True)
    ensure_ledger(conn)  # vpbench's own bookkeeping, there before the step in every case
    for migration in discover_migrations():
        if migration.id < backfill.step:
            apply_step(conn, migration, "up")
    rows = sorted(backfill.ids(conn, backfill.todo))
    held = rows[len(rows) // 2]
    if backfill.prepare:
        conn.execute(backfill.prepare.format(held=held).encode())
    conn.execute(
        "CREATE FUNCTION public.test_hold() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_advisory_xact_lock({HOLD_KEY}); "
        "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$"
    )
    conn.execute(
        f"CREATE TRIGGER test_hold BEFORE UPDATE OR DELETE ON {backfill.table} FOR EACH ROW "
        f"WHEN (OLD.id = '{held}') EXECUTE FUNCTION public.test_hold()"
    )
    return Legacy(name, conn, held)


@pytest.fixture
def legacy(target: ServerTarget, session_prefix: str) -> Iterator[Callable[[Backfill], Legacy]]:
    opened: list[Conn] = []

    def make(backfill: Backfill) -> Legacy:
        made = before_step(target, session_prefix, backfill)
        opened.append(made.conn)
        return made

    yield make
    for conn in opened:
        conn.close()


@contextmanager
def backfill_held(target: ServerTarget, legacy: Legacy) -> Iterator[Callable[[], None]]:
    """Hold HOLD_KEY (advisory locks belong to a database: the legacy one) for the block, or
    until the returned release is called."""
    with psycopg.connect(target.for_database(legacy.name), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [HOLD_KEY])
        held = [True]

        def release() -> None:
            if held[0]:
                holder.execute("SELECT pg_advisory_unlock(%s)", [HOLD_KEY])
                held[0] = False

        try:
            yield release
        finally:
            release()


def wait_until_held(conn: Conn) -> None:
    """Until a session of this database waits for HOLD_KEY: the backfill reached the row."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objid = %s "
            "AND a.datname = current_database()",
            [HOLD_KEY],
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.02)
    pytest.fail("the backfill never reached the held row")


def interrupted_up(target: ServerTarget, legacy: Legacy, step: str) -> str:
    """``vpbench migrate up STEP`` stopped with Ctrl-C while its backfill waits at the held
    row; its stderr."""
    env = {**os.environ, "VPBENCH_DSN": target.conninfo, "PGOPTIONS": SMALL_BATCHES}
    with backfill_held(target, legacy):
        process = subprocess.Popen(
            [sys.executable, "-m", "vpbench", "migrate", "up", step, "--db", legacy.name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        try:
            wait_until_held(legacy.conn)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    return stderr


@pytest.mark.slow
@pytest.mark.parametrize("step", BACKFILLS)
def test_a_stopped_backfill_is_undone_by_its_down_and_finished_by_running_it_again(
    target: ServerTarget, legacy: Callable[[Backfill], Legacy], step: str
) -> None:
    backfill = BACKFILLS[step]
    held = legacy(backfill)
    conn = held.conn
    before = capture(conn)
    rows = sorted(r[0] for r in conn.execute(f"SELECT id::text FROM {backfill.table}"))
    (migration,) = [m for m in discover_migrations() if m.id == step]

    stderr = interrupted_up(target, held, step)
    assert f"{step} up stopped part-way" in stderr and "down.sql" in stderr
    assert stderr.strip().splitlines()[-1] == "vpbench: interrupted"
    done, undone = backfill.ids(conn, backfill.done), backfill.ids(conn, backfill.undone)
    # The batches before the held one committed (a prefix in id order); the held one and
    # those after it did not.
    assert done and held.held_row in undone and max(done) < min(undone)
    assert step not in applied_migrations(conn)

    apply_step(conn, migration, "down")  # its down.sql, on the partial state
    assert_same(capture(conn), before)

    interrupted_up(target, held, step)
    undone = backfill.ids(conn, backfill.undone)
    env = {**os.environ, "VPBENCH_DSN": target.conninfo, "PGOPTIONS": SMALL_BATCHES}
    again = subprocess.run(
        [sys.executable, "-m", "vpbench", "-v", "migrate", "up", step, "--db", held.name],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    # -v shows the backfill's own count: what the stopped run had not done.
    found = re.search(backfill.reported, " ".join(again.stderr.split()))  # log lines wrap
    assert found, again.stderr
    counted = sum(int(group) for group in found.groups())
    assert counted == len(undone) if backfill.exact else counted >= len(undone)
    assert step in applied_migrations(conn)
    # No row lost or added, every row done once and right, the constraints proven.
    assert sorted(r[0] for r in conn.execute(backfill.kept.encode())) == rows
    backfill.check(conn)


@pytest.mark.slow
@pytest.mark.parametrize("step", [s for s, b in BACKFILLS.items() if b.trigger])
def test_what_the_app_commits_while_the_backfill_runs_is_done_by_its_trigger(
    target: ServerTarget, legacy: Callable[[Backfill], Legacy], step: str
) -> None:
    backfill = BACKFILLS[step]
    held = legacy(backfill)
    conn = held.conn
    (migration,) = [m for m in discover_migrations() if m.id == step]
    query = f"SELECT id::text FROM {backfill.table}"
    ids = backfill.ids(conn, query)
    options = TrafficOptions(readers=0, writers=1, writes_per_s=100, commit_writes=True)
    traffic = LiveTraffic(target.for_database(held.name), [], {}, (), options)
    outcome: list[Any] = []

    def written() -> int:
        return len(backfill.ids(conn, query) - ids)

    with psycopg.connect(target.for_database(held.name), autocommit=True) as migrating:
        migrating.execute("SELECT set_config('backfill.batch_rows', '20', false)")
        with backfill_held(target, held) as release:
            rehearsal = threading.Thread(
                target=lambda: outcome.append(
                    apply_under_load(migrating, migration, "up", DEFAULT_LOCKS, traffic)
                )
            )
            rehearsal.start()
            try:
                wait_until_held(conn)
                # The backfill is past its first half and waits: the app writes meanwhile.
                during = written()
                deadline = time.monotonic() + 60
                while written() < during + 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
                written_during = written() - during
            finally:
                release()
                rehearsal.join(timeout=120)
    assert written_during >= 3
    ((_, record),) = outcome
    # Every write went through, but for those a new constraint refused (a copy of an orphan).
    writes = [r for r in record.requests if r.kind == "write"]
    assert any(r.outcome == "ok" for r in writes), writes
    assert all(r.outcome == "ok" or (r.sqlstate or "").startswith("23") for r in writes), writes
    backfill.check(conn)  # the rows written before, during and after the held batch


@pytest.mark.slow
@pytest.mark.parametrize("step", BACKFILLS)
def test_the_deployed_app_updates_a_row_before_the_backfill_reaches_it(
    target: ServerTarget, legacy: Callable[[Backfill], Legacy], step: str
) -> None:
    """The step's new CHECK holds every row the app writes; a stored row the batches have
    not reached yet is done by the write itself, so the deployed app's update goes through,
    and down.sql after the whole step leaves the app's change and nothing else."""
    backfill, app = BACKFILLS[step], APP_UPDATES[step]
    held = legacy(backfill)
    conn = held.conn
    row = max(backfill.ids(conn, app.rows))
    assert row > held.held_row  # not reached while the test holds the batch of the held row
    if app.prepare:
        conn.execute(app.prepare.encode(), [row])
    with conn.transaction(force_rollback=True):
        conn.execute(app.update.encode(), [row])
        expected = capture(conn)  # the state before the step, with the app's change
    (migration,) = [m for m in discover_migrations() if m.id == step]
    failed: list[BaseException] = []

    def up(migrating: Conn) -> None:
        try:
            apply_step(migrating, migration, "up")
        except BaseException as error:  # reported by the test's thread below
            failed.append(error)

    with psycopg.connect(target.for_database(held.name), autocommit=True) as migrating:
        migrating.execute("SELECT set_config('backfill.batch_rows', '20', false)")
        with backfill_held(target, held) as release:
            rehearsal = threading.Thread(target=up, args=(migrating,))
            rehearsal.start()
            try:
                wait_until_held(conn)
                assert row in backfill.ids(conn, backfill.undone)
                conn.execute(app.update.encode(), [row])  # the deployed app: no error
                assert row in backfill.ids(conn, backfill.done)
            finally:
                release()
                rehearsal.join(timeout=120)
    assert not failed, failed
    backfill.check(conn)
    apply_step(conn, migration, "down")
    assert_same(capture(conn), expected)


SLOW_ROWS = """
CREATE TABLE public.test_batches (txid bigint, at timestamptz);
CREATE FUNCTION public.test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.002);
    INSERT INTO public.test_batches VALUES (txid_current(), clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER a_test_slow BEFORE UPDATE ON quiz_attempts
    FOR EACH ROW EXECUTE FUNCTION public.test_slow();
"""
"""every row a batch changes takes 2 ms more (a loaded machine), and is logged with the
batch's transaction and the time it was changed"""


@pytest.mark.slow
@pytest.mark.parametrize(("batch_ms", "within"), [(None, True), ("1000000", False)])
def test_a_batch_commits_within_its_time_whatever_the_load(
    legacy: Callable[[Backfill], Legacy], batch_ms: str | None, within: bool
) -> None:
    """A batch holds the locks of the rows it changed until it commits, and the app's
    writes to them wait. With every row 2 ms slower, 0005's batches shrink to commit within
    200 ms each, and the whole table is still filled; the twin, a time limit too high to
    bind (batches that only grow, as they were), holds its rows past the 1 s stall budget."""
    held = legacy(JSONB)
    conn = held.conn
    conn.execute(SLOW_ROWS)
    rows = len(JSONB.ids(conn, JSONB.todo))
    (migration,) = [m for m in discover_migrations() if m.id == JSONB.step]
    if batch_ms is not None:
        conn.execute("SELECT set_config('backfill.batch_ms', %s, false)", [batch_ms])
    apply_step(conn, migration, "up")
    batches = conn.execute(
        "SELECT count(*), 1000 * extract(epoch FROM max(at) - min(at)) FROM public.test_batches "
        "GROUP BY txid ORDER BY min(at)"
    ).fetchall()
    assert sum(n for n, _ in batches) == rows
    JSONB.check(conn)
    longest = max(float(ms) for _, ms in batches)
    assert batches[0][0] == 50  # the first batch is small; later ones fit the time
    if within:
        assert longest <= 400, batches
        assert max(n for n, _ in batches[1:]) <= 200, batches
    else:
        assert longest >= 1000, batches
    for up in sorted((fixtures_dir() / "migrations").glob("*/up.sql")):  # each backfill sizes
        text = up.read_text()
        assert ("backfill.batch_rows" in text) == ("backfill.batch_ms" in text), up
