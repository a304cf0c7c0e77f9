"""A step's ``up`` rehearsed under live traffic, on a copy of the database before it.

The rehearsal runs on a throw-away template copy, not on the database ``steps`` goes on to
measure: the traffic's writes are rolled back, but they still leave dead tuples and index
entries behind, and a probe must not change what it measures (the null test). The copy is
made the same way as the backup, from the same settled state, so the migration meets the
same data and the same locks as on the database itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from vpbench.errors import MigrationError
from vpbench.measure.availability import Availability, availability
from vpbench.measure.traffic import LiveTraffic, TrafficRecord, apply_under_load
from vpbench.migrations.apply import StepApplied
from vpbench.migrations.folder import Migration
from vpbench.migrations.ledger import applied_migrations
from vpbench.migrations.locking import LockPolicy
from vpbench.server.backup import Backup, backup_name, copy_database, drop_backup
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.model import StepsOptions
from vpbench.workload.sampling import ParameterPool, load_workload_pools
from vpbench.workload.spec import Workload, load_workloads


def rehearse_under_load(
    target: ServerTarget,
    before: Backup,
    migration: Migration,
    workloads: Sequence[Workload],
    pools: dict[str, dict[str, ParameterPool]],
    applied: Sequence[str],
    options: StepsOptions,
) -> tuple[Availability, Backup, float]:
    """Apply ``up`` to a copy of ``before`` (the backup of the state before the step) while
    the app's traffic runs against it; a step that then fails (its locks not granted in time
    under the traffic, say) fails availability. ``pools``: the parameters the traffic draws,
    loaded from ``before`` (on ``large`` loading them takes a minute). Returns the copy it
    made (dropped by then), named after the working database, and the seconds ``up`` ran."""
    assert options.traffic is not None
    budget = migration.stall_budget_ms(options.max_stall_ms)
    rehearsal = copy_database(
        target, before.name, backup_name(before.source, f"load_{migration.id}")
    )
    try:
        with connect(target, rehearsal.name, autocommit=True) as conn:
            traffic = LiveTraffic(
                target.for_database(rehearsal.name), workloads, pools, applied, options.traffic
            )
            try:
                locks = options.step_locks(migration)
                step, record = apply_under_load(conn, migration, "up", locks, traffic)
            except MigrationError as exc:  # applied at rest, it failed under load
                failed = traffic.record()
                found = availability(failed, budget, failure=str(exc))
                return found, rehearsal, _seconds(failed)
    finally:
        drop_backup(target, rehearsal)
    return availability(record, budget, statements=step.statements), rehearsal, step.seconds


def _seconds(record: TrafficRecord) -> float:
    """How long the migration ran under the traffic of ``record``."""
    return record.migration_s[1] - record.migration_s[0] if record.migration_s else 0.0


def apply_under_traffic(
    target: ServerTarget,
    dbname: str,
    conn: psycopg.Connection[Any],
    migration: Migration,
    migrations: Sequence[Migration],
    locks: LockPolicy,
    workload_paths: Sequence[Path],
    max_stall_ms: float,
) -> tuple[StepApplied, Availability]:
    """Apply ``up`` on ``conn`` (``dbname`` itself) while the app's traffic runs on it, its
    lock_timeout at most half the step's stall budget (``migrate up --under-load``: the
    traffic's rolled-back writes leave dead tuples there, which autovacuum or the next
    settle removes)."""
    workloads = load_workloads(workload_paths, [m.id for m in migrations])
    pools = load_workload_pools(conn, workloads)
    traffic = LiveTraffic(target.for_database(dbname), workloads, pools, applied_migrations(conn))
    budget = migration.stall_budget_ms(max_stall_ms)
    step, record = apply_under_load(conn, migration, "up", locks.within(budget), traffic)
    return step, availability(record, budget, statements=step.statements)
