"""A migration under live traffic, on real PostgreSQL: what the sampler saw, not how long
anything took on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import exclusive_lock_up, traffic_workload
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.availability import availability
from vpbench.measure.traffic import LiveTraffic, TrafficOptions, TrafficRecord, apply_under_load
from vpbench.migrations.folder import discover_migrations
from vpbench.migrations.locking import LockPolicy
from vpbench.server.target import ServerTarget
from vpbench.workload.sampling import load_workload_pools
from vpbench.workload.spec import load_workloads

OPTIONS = TrafficOptions(readers=1, writers=1, writes_per_s=50, sample_ms=20, baseline_s=0.5)


@pytest.fixture(scope="module")
def legacy(target: ServerTarget, session_prefix: str) -> str:
    name = f"{session_prefix}_traffic"
    seed_database(target, name, get_profile("tiny"), seed=7)
    return target.for_database(name)


def _under_load(conninfo: str, folder: Path, up: str, toml: str = "") -> tuple[Any, TrafficRecord]:
    step = folder / "migrations" / "0001_step"
    step.mkdir(parents=True)
    (step / "up.sql").write_text(up)
    (step / "down.sql").write_text("SELECT 1;\n")
    (step / "migration.toml").write_text('title = "step"\n' + toml)
    (migration,) = discover_migrations(folder / "migrations")
    workloads = load_workloads([traffic_workload(folder)], ())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        pools = load_workload_pools(conn, workloads)
        traffic = LiveTraffic(conninfo, workloads, pools, (), OPTIONS)
        applied, record = apply_under_load(conn, migration, "up", LockPolicy(), traffic)
        conn.execute("DROP INDEX IF EXISTS probe_idx")
        conn.execute("DELETE FROM vpbench.migrations WHERE id = '0001_step'")
    return applied, record


def test_an_exclusive_lock_stalls_reads_and_writes_and_is_named(
    legacy: str, tmp_path: Path
) -> None:
    applied, record = _under_load(legacy, tmp_path, exclusive_lock_up(3))
    found = availability(record, budget_ms=1000)
    assert not found.passed
    assert found.longest_stall_ms["read"] >= 2000 and found.longest_stall_ms["write"] >= 2000
    assert found.worst is not None
    assert found.worst.waited_for is not None and found.worst.waited_for.endswith(
        "on quiz_attempts"
    )
    assert found.worst.migration_holds == "AccessExclusiveLock"
    assert found.worst.statement == "SELECT pg_sleep(3)"
    assert "AccessExclusiveLock on quiz_attempts" in applied.statements[0].locks
    assert any(w.by_migration for w in record.waits) and record.samples > 10
    # Seen on the server: the exclusive lock held from the start for the whole sleep.
    (held,) = [h for h in record.held if h.lock == "AccessExclusiveLock on quiz_attempts"]
    assert held.first_s < 0.5 and held.last_s - held.first_s >= 2.0
    # The requests queued behind the lock were kept: each session has one that waited for
    # most of the lock's hold and completed once it was released (stopping the traffic at
    # once would cancel them). Compared with the release, not with the end of the migration,
    # which is taken when the runner returns, a moment after the COMMIT let the queued
    # insert through.
    assert record.migration_s is not None
    for session in ("read 1", "write 1"):
        assert any(
            r.session == session and r.end_s - r.start_s >= 2.0 and r.end_s >= held.last_s
            for r in record.requests
        ), session
    # nothing failed: the requests waited, then went through
    assert found.failed == {} and found.requests > 0


def test_a_concurrent_index_build_does_not_stall_writes(legacy: str, tmp_path: Path) -> None:
    """The twin: the same traffic around CREATE INDEX CONCURRENTLY stays within budget."""
    up = "CREATE INDEX CONCURRENTLY probe_idx ON quiz_attempts (video_id, completed_at);\n"
    _, record = _under_load(legacy, tmp_path, up, "transactional = false\n")
    found = availability(record, budget_ms=1000)
    assert found.passed, found.worst
    assert found.longest_stall_ms["write"] < 1000 and found.requests > 0
    assert not any(w.migration_holds == "AccessExclusiveLock" for w in record.waits)
