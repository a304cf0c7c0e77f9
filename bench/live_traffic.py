"""What each reference migration does to the running app, at rest and under live traffic.

    python bench/live_traffic.py [--profile medium] [--dsn DSN]

On a seeded database, for each reference migration in order: ``up`` on one template copy
at rest (the baseline), and on another copy made the same way while the app's traffic runs
(2 readers on the workloads' queries, 1 writer inserting like the app, rolled back; the
defaults of ``steps``). Printed per step: duration at rest and under load, the longest read
and write lock wait on the migration (*blocked*, what the stall budget judges) and how much
the other requests slowed (p99 under load against at rest, relative to each query's at-rest
median, with its interval), failed requests, and the strongest lock the step held with how
long it held it (from the statement where it was first observed to the end of a
transactional step). Then the step is applied to the
database itself, at rest, and the next one is measured from there.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.dataset.snapshot import APPLICATION_TABLES
from vpbench.measure.availability import availability
from vpbench.measure.traffic import LiveTraffic, apply_under_load
from vpbench.migrations.apply import StepApplied, apply_step
from vpbench.migrations.ledger import applied_migrations
from vpbench.migrations.locking import DEFAULT_LOCKS
from vpbench.migrations.sources import discover_migrations
from vpbench.server.backup import create_backup, drop_backup
from vpbench.server.maintenance import settle
from vpbench.server.target import connect, resolve_target
from vpbench.workload.sampling import load_workload_pools
from vpbench.workload.spec import load_workloads

DATABASE = "vpbench_bench_live"
# PostgreSQL's table lock modes, weakest first.
MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
         "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")  # fmt: skip


def strongest_lock(applied: StepApplied) -> str:
    """The strongest lock the step took on an application table (not, say, on an index it
    creates itself), and how long it held it (``StepApplied.lock_holds``)."""
    best: tuple[int, str, float] | None = None
    for hold in applied.lock_holds:
        mode, _, relation = hold.lock.partition(" on ")
        if relation not in APPLICATION_TABLES:
            continue
        rank, held = (MODES.index(mode) if mode in MODES else -1), hold.until_s - hold.from_s
        if best is None or (rank, held) > (best[0], best[2]):
            best = (rank, hold.lock, held)
    return f"{best[1]} for {best[2]:.1f} s" if best else "none observed"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="medium")
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)
    target = resolve_target(args.dsn)
    began = time.perf_counter()
    seed_database(target, DATABASE, get_profile(args.profile), seed=1, force=True)
    migrations = discover_migrations()
    workloads = load_workloads(default_workload_paths(), [m.id for m in migrations])
    print(f"server {target.describe(DATABASE)} ({target.source}); profile {args.profile}; "
          f"seeded in {time.perf_counter() - began:.0f}s; traffic: 2 readers, 1 writer "
          "(200 inserts/s, rolled back), at-rest baseline of every query")  # fmt: skip
    print("| step | at rest | under load | reads blocked | writes blocked | reads slowed | "
          "writes slowed | failed | strongest lock held (at rest) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---|---:|---|")
    rows = []
    for migration in migrations:
        rest = create_backup(target, DATABASE, f"rest_{migration.id[:4]}")
        load = create_backup(target, DATABASE, f"load_{migration.id[:4]}")
        try:
            budget = migration.stall_budget_ms(1000.0)
            locks = DEFAULT_LOCKS.within(budget)  # as steps applies it under traffic
            with connect(target, rest.name, autocommit=True) as conn:
                at_rest = apply_step(conn, migration, "up", locks)
            with connect(target, load.name, autocommit=True) as conn:
                applied = applied_migrations(conn)
                pools = load_workload_pools(conn, workloads)
                traffic = LiveTraffic(target.for_database(load.name), workloads, pools, applied)
                loaded, record = apply_under_load(conn, migration, "up", locks, traffic)
        finally:
            drop_backup(target, rest)
            drop_backup(target, load)
        found = availability(record, budget)
        failed = sum(found.failed.values())
        slowed = {kind: found.slowed[kind].describe() for kind in found.slowed}
        row: dict[str, Any] = {
            "step": migration.id,
            "at_rest_s": at_rest.seconds,
            "under_load_s": loaded.seconds,
            "blocked_ms": found.blocked_ms,
            "slowed": slowed,
            "failed": found.failed,
            "lock": strongest_lock(at_rest),
        }
        rows.append(row)
        print(f"| {migration.id} | {at_rest.seconds:.1f} s | {loaded.seconds:.1f} s | "
              f"{found.blocked_ms['read'] / 1000:.2f} s | "
              f"{found.blocked_ms['write'] / 1000:.2f} s | {slowed['read']} | "
              f"{slowed['write']} | {failed} | {row['lock']} |", flush=True)  # fmt: skip
        with connect(target, DATABASE, autocommit=True) as conn:
            apply_step(conn, migration, "up", DEFAULT_LOCKS)
            settle(conn)
    print(f"total {time.perf_counter() - began:.0f}s")
    return rows


if __name__ == "__main__":
    main()
