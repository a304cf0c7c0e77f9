"""The reference series' batched backfill on a live table (0003_voice_memo_metadata): stopped
with Ctrl-C part-way, its down.sql restores the state before it and running it again ends
with every row done once; the rows the app commits while it runs are done by its trigger.

The backfill is held at a chosen row, not timed: a trigger of the test's own makes the
batch that updates that row wait for an advisory lock the test holds, so "part-way" is the
same place on every machine."""

from __future__ import annotations

import itertools
import os
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
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.traffic import LiveTraffic, TrafficOptions, apply_under_load
from vpbench.migrations.apply import apply_step
from vpbench.migrations.locking import DEFAULT_LOCKS
from vpbench.migrations.sources import discover_migrations
from vpbench.server.target import ServerTarget

Conn = psycopg.Connection[tuple[Any, ...]]

STEP = "0003_voice_memo_metadata"
HOLD_KEY = 250_003
SMALL_BATCHES = "-c backfill.batch_rows=20 -c backfill.pause_ms=0"
"""tiny has a few hundred voice memos: batches of 20 make the backfill a dozen of them"""

_numbers = itertools.count(1)


@dataclass(frozen=True)
class Legacy:
    name: str
    conn: Conn
    held_row: str
    """the voice memo whose batch waits while the test holds HOLD_KEY"""


@pytest.fixture
def before_step(target: ServerTarget, session_prefix: str) -> Iterator[Legacy]:
    """A seeded tiny database migrated up to the step before the backfill, with the hold
    trigger on the voice memo in the middle of the id order."""
    name = f"{session_prefix}_backfill_{next(_numbers)}"
    seed_database(target, name, get_profile("tiny"), seed=5)
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        for migration in discover_migrations():
            if migration.id < STEP:
                apply_step(conn, migration, "up")
        held = conn.execute(
            "SELECT id::text FROM reflections WHERE kind = 'voice' ORDER BY id "
            "OFFSET (SELECT count(*) / 2 FROM reflections WHERE kind = 'voice') LIMIT 1"
        ).fetchone()
        assert held is not None
        conn.execute(
            "CREATE FUNCTION public.test_hold() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_advisory_xact_lock({HOLD_KEY}); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER test_hold BEFORE UPDATE ON reflections FOR EACH ROW "
            f"WHEN (OLD.id = '{held[0]}') EXECUTE FUNCTION public.test_hold()"
        )
        yield Legacy(name, conn, held[0])


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


def interrupted_up(target: ServerTarget, legacy: Legacy) -> str:
    """``vpbench migrate up STEP`` stopped with Ctrl-C while its backfill waits at the held
    row; its stderr."""
    env = {**os.environ, "VPBENCH_DSN": target.conninfo, "PGOPTIONS": SMALL_BATCHES}
    with backfill_held(target, legacy):
        process = subprocess.Popen(
            [sys.executable, "-m", "vpbench", "migrate", "up", STEP, "--db", legacy.name],
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


def voice_memos(conn: Conn) -> dict[str, tuple[Any, ...]]:
    """Each voice memo's content, status and parsed values, by id."""
    rows = conn.execute(
        "SELECT id::text, content, audio_header_status, audio_duration_seconds, audio_format, "
        "audio_size_bytes, audio_url FROM reflections WHERE kind = 'voice'"
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def assert_parsed(memo: tuple[Any, ...]) -> None:
    content, status, *audio = memo
    expected = expected_audio(content)
    assert tuple(audio) == expected, content
    assert status == ("malformed" if expected[0] is None else "parsed"), content


def applied(conn: Conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM vpbench.migrations ORDER BY id")]


@pytest.mark.slow
def test_a_stopped_backfill_is_undone_by_its_down_and_finished_by_running_it_again(
    target: ServerTarget, before_step: Legacy
) -> None:
    conn = before_step.conn
    before = capture(conn)
    ids = {r[0] for r in conn.execute("SELECT id FROM reflections")}
    (step,) = [m for m in discover_migrations() if m.id == STEP]

    stderr = interrupted_up(target, before_step)
    assert f"{STEP} up stopped part-way" in stderr and "down.sql" in stderr
    assert stderr.strip().splitlines()[-1] == "vpbench: interrupted"
    memos = voice_memos(conn)
    done = {i for i, memo in memos.items() if memo[1] is not None}
    undone = set(memos) - done
    # The batches before the held one committed (a prefix in id order); the held one and
    # those after it did not.
    assert done and before_step.held_row in undone and max(done) < min(undone)
    assert STEP not in applied(conn)

    apply_step(conn, step, "down")  # its down.sql, on the partial state
    assert_same(capture(conn), before)

    interrupted_up(target, before_step)
    env = {**os.environ, "VPBENCH_DSN": target.conninfo, "PGOPTIONS": SMALL_BATCHES}
    again = subprocess.run(
        [sys.executable, "-m", "vpbench", "-v", "migrate", "up", STEP, "--db", before_step.name],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    # -v shows the backfill's own count: what the stopped run had not done.
    assert f"{STEP}: parsed {len(voice_memos(conn)) - len(done)} voice memo(s)" in again.stderr
    memos = voice_memos(conn)
    assert STEP in applied(conn)
    # No row lost or added, every memo parsed once and right, the constraint proven.
    assert {r[0] for r in conn.execute("SELECT id FROM reflections")} == ids
    for memo in memos.values():
        assert_parsed(memo)
    validated = conn.execute(
        "SELECT convalidated FROM pg_constraint WHERE conname = 'reflections_audio_header_check'"
    ).fetchall()
    assert validated == [(True,)]


@pytest.mark.slow
def test_what_the_app_commits_while_the_backfill_runs_is_parsed(
    target: ServerTarget, before_step: Legacy
) -> None:
    conn = before_step.conn
    (step,) = [m for m in discover_migrations() if m.id == STEP]
    ids = {r[0] for r in conn.execute("SELECT id::text FROM reflections")}
    options = TrafficOptions(readers=0, writers=1, writes_per_s=100, commit_writes=True)
    traffic = LiveTraffic(target.for_database(before_step.name), [], {}, (), options)
    outcome: list[Any] = []

    def new_voice_memos() -> int:
        rows = conn.execute("SELECT id::text FROM reflections WHERE kind = 'voice'").fetchall()
        return sum(1 for (i,) in rows if i not in ids)

    with psycopg.connect(target.for_database(before_step.name), autocommit=True) as migrating:
        migrating.execute("SELECT set_config('backfill.batch_rows', '20', false)")
        with backfill_held(target, before_step) as release:
            rehearsal = threading.Thread(
                target=lambda: outcome.append(
                    apply_under_load(migrating, step, "up", DEFAULT_LOCKS, traffic)
                )
            )
            rehearsal.start()
            try:
                wait_until_held(conn)
                # The backfill is past its first half and waits: the app writes meanwhile.
                during = new_voice_memos()
                deadline = time.monotonic() + 60
                while new_voice_memos() < during + 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
                written_during = new_voice_memos() - during
            finally:
                release()
                rehearsal.join(timeout=120)
    assert written_during >= 3
    ((_, record),) = outcome
    writes = [r for r in record.requests if r.kind == "write"]
    assert writes and all(r.outcome == "ok" for r in writes), writes
    memos = voice_memos(conn)
    new = {i: memo for i, memo in memos.items() if i not in ids}
    assert len(new) >= written_during
    for memo in new.values():
        assert_parsed(memo)
