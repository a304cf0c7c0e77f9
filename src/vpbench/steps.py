"""``vpbench steps``: the main job. Seed the legacy database, then for every pending
migration: back up, apply, audit, measure before (the backup) and after in alternating
rounds, and check reversibility, result equivalence, storage and write cost and that no row
was lost. One results document per step, plus a summary.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from vpbench.audit import AuditReport, run_audit
from vpbench.backup import Backup, create_backup, drop_backup, restore_backup
from vpbench.databases import database_state, refuse_unless_owned, user_table_count
from vpbench.errors import StepsInterruptedError, VpbenchError
from vpbench.measure import EntryResult, RunOptions, measure_workloads, merge_entries
from vpbench.migrate import MigrationError, apply_step, migration_states, plan_up
from vpbench.migrations import Migration, applied_migrations, discover_migrations
from vpbench.profiles import DirtyRates, Profile
from vpbench.results import ensure_writable, utc_stamp, write_document
from vpbench.runinfo import collect_metadata
from vpbench.sampling import ParameterPool, load_pools
from vpbench.seed import seed_database
from vpbench.server import ServerTarget, connect
from vpbench.snapshot import APPLICATION_TABLES, row_counts, schema_shape, snapshot_tables
from vpbench.stepchecks import (
    WRITE_TABLES,
    Equivalence,
    RelationCost,
    compare_results,
    quarantined_rows,
    relation_costs,
    relation_sizes,
    write_throughput,
)
from vpbench.steps_report import step_document, summary_document
from vpbench.workload import Workload, load_workloads

log = logging.getLogger("vpbench")

StepsEvent = Callable[[str], None]


@dataclass(frozen=True)
class StepsOptions:
    rounds: int = 10
    """alternating before/after rounds; samples per state = rounds * repeat"""
    repeat: int = 3
    warmup: int = 1
    explain: int = 3
    timeout_ms: int = 30_000
    seed: int = 1
    write_batch: int = 2_000
    keep_backups: bool = False


@dataclass(frozen=True)
class StepReport:
    migration: Migration
    backup_method: str
    up_seconds: float
    audit_before: AuditReport
    audit_after: AuditReport
    before: tuple[EntryResult, ...]
    after: tuple[EntryResult, ...]
    reversible: bool
    reversibility_problems: tuple[str, ...]
    equivalence: tuple[Equivalence, ...]
    unexpected_changes: tuple[str, ...]
    costs: tuple[RelationCost, ...]
    writes_before: dict[str, float | None]
    writes_after: dict[str, float | None]
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    quarantined: dict[str, int]
    round_size: int
    """samples per entry, state and round (pairs are judged round by round)"""
    path: Path | None = None

    @property
    def data_intact(self) -> bool:
        return all(
            self.rows_before[t] == self.rows_after[t] + self.quarantined.get(t, 0)
            for t in self.rows_before
        )

    @property
    def passed(self) -> bool:
        return self.reversible and self.data_intact and not self.unexpected_changes


@dataclass(frozen=True)
class StepsResult:
    steps: tuple[StepReport, ...]
    out_dir: Path
    summary_path: Path
    seconds: float

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)


def run_steps(
    target: ServerTarget,
    dbname: str,
    *,
    profile: Profile,
    seed: int,
    workload_paths: Sequence[Path],
    migrations_dir: Path | None = None,
    out_dir: Path | None = None,
    to: str | None = None,
    options: StepsOptions = StepsOptions(),
    dirty: DirtyRates | None = None,
    force: bool = False,
    on_event: StepsEvent | None = None,
) -> StepsResult:
    """Run the whole measured migration series on a freshly seeded database."""
    began = time.perf_counter()
    say = on_event or (lambda message: None)
    migrations = discover_migrations(migrations_dir)
    workloads = load_workloads(workload_paths, [m.id for m in migrations])
    out = ensure_writable(out_dir or Path("results") / f"steps-{utc_stamp()}")
    state = database_state(target, dbname)
    if state.exists and not state.marked:
        with connect(target, dbname) as conn:
            tables = user_table_count(conn)
        refuse_unless_owned(state, operation="run steps on (it is reseeded)", tables=tables,
                            force=force)  # fmt: skip
    say(f"seeding {dbname} with profile {profile.name} (seed {seed})")
    seed_database(target, dbname, profile, seed=seed, dirty=dirty, force=force)
    with connect(target, dbname, autocommit=True) as conn:
        pending = plan_up(migration_states(conn, migrations), to)
    reports: list[StepReport] = []
    for number, migration in enumerate(pending, start=1):
        say(f"step {number}/{len(pending)}: {migration.id} — {migration.title}")
        report = _run_step(target, dbname, migration, workloads, options, say)
        metadata = _metadata(target, dbname, migration, options, workload_paths)
        path = write_document(step_document(report, metadata), out / f"{migration.id}.json")
        reports.append(replace(report, path=path))
    summary_path = write_document(
        summary_document(reports, profile.name, seed), out / "summary.json"
    )
    return StepsResult(tuple(reports), out, summary_path, time.perf_counter() - began)


def _metadata(
    target: ServerTarget,
    dbname: str,
    migration: Migration,
    options: StepsOptions,
    workload_paths: Sequence[Path],
) -> dict[str, Any]:
    with connect(target, dbname, autocommit=True) as conn:
        return collect_metadata(
            conn,
            server=f"{target.describe(dbname)} ({target.source})",
            label=migration.id,
            options=options.__dict__,
            workload_paths=[str(p) for p in workload_paths],
            applied_migrations=applied_migrations(conn),
        )


def _run_step(
    target: ServerTarget,
    dbname: str,
    migration: Migration,
    workloads: Sequence[Workload],
    options: StepsOptions,
    say: StepsEvent,
) -> StepReport:
    backup = create_backup(target, dbname, f"before_{migration.id[:4]}")
    say(f"  backed up to {backup.name} ({backup.method})")
    try:
        with connect(target, dbname, autocommit=True) as conn:
            applied_before = applied_migrations(conn)
            shape, snapshot = schema_shape(conn), snapshot_tables(conn)
            quarantine_before = quarantined_rows(conn)
            audit_before = run_audit(conn)
            sizes_before = relation_sizes(conn)
            writes_before = {
                t: write_throughput(conn, t, options.write_batch) for t in WRITE_TABLES
            }
            try:
                applied = apply_step(conn, migration, "up")
            except MigrationError as exc:
                conn.close()
                restore_backup(target, backup)
                raise MigrationError(
                    f"{exc.message}; the database was restored from its backup ({backup.method})",
                    path=exc.path, line=exc.line, sqlstate=exc.sqlstate,
                ) from None  # fmt: skip
            applied_after = applied_migrations(conn)
            say(f"  applied in {applied.seconds:.1f}s; auditing")
            audit_after = run_audit(conn)
            sizes_after = relation_sizes(conn)
            writes_after = {t: write_throughput(conn, t, options.write_batch) for t in WRITE_TABLES}
            rows_after = row_counts(conn)
            quarantine_after = quarantined_rows(conn)
        say("  measuring before and after in alternating rounds")
        pools = _pools(target.for_database(backup.name), workloads)
        before, after = measure_interleaved(
            target.for_database(backup.name), target.for_database(dbname), workloads, pools,
            applied_before, applied_after, options,
        )  # fmt: skip
        say("  checking result equivalence")
        equivalence = _equivalence(target, backup, dbname, workloads, pools,
                                   applied_before, applied_after, options.seed)  # fmt: skip
        say("  checking reversibility (down, compare, up)")
        problems = _reversibility(target, dbname, migration, shape, snapshot)
    except KeyboardInterrupt:
        raise StepsInterruptedError(
            f"interrupted during {migration.id}: {dbname} is consistent with its migration "
            f"ledger; the state before this step is kept in database {backup.name}"
        ) from None
    except BaseException:
        _drop_if_present(target, backup)
        raise
    if not options.keep_backups:
        _drop_if_present(target, backup)
    unexpected = tuple(
        f"{e.query}: {e.detail}"
        for e in equivalence
        if not e.same and e.query not in migration.changes_results
    )
    return StepReport(
        migration=migration,
        backup_method=backup.method,
        up_seconds=applied.seconds,
        audit_before=audit_before,
        audit_after=audit_after,
        before=before,
        after=after,
        reversible=not problems,
        reversibility_problems=tuple(problems),
        equivalence=equivalence,
        unexpected_changes=unexpected,
        costs=relation_costs(sizes_before, sizes_after),
        writes_before=writes_before,
        writes_after=writes_after,
        rows_before={t: snapshot[t].rows for t in APPLICATION_TABLES},
        rows_after=rows_after,
        quarantined={t: quarantine_after[t] - quarantine_before[t] for t in quarantine_after},
        round_size=options.repeat,
    )


def _drop_if_present(target: ServerTarget, backup: Backup) -> None:
    if database_state(target, backup.name).exists:
        drop_backup(target, backup)


def _pools(conninfo: str, workloads: Sequence[Workload]) -> dict[str, dict[str, ParameterPool]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {w.name: load_pools(conn, w) for w in workloads}


def balanced_orders(rounds: int, seed: int) -> list[tuple[str, str]]:
    """Which state runs first in each round: every pair of rounds holds one "before" first
    and one "after" first, in random order. The second run of a round meets caches the
    first one warmed for the same parameters, so an unbalanced order would favour a side."""
    shuffler = random.Random(seed)
    orders: list[tuple[str, str]] = []
    while len(orders) < rounds:
        pair = [("before", "after"), ("after", "before")]
        shuffler.shuffle(pair)
        orders += pair
    return orders[:rounds]


def measure_interleaved(
    before: str,
    after: str,
    workloads: Sequence[Workload],
    pools: dict[str, dict[str, ParameterPool]],
    applied_before: Sequence[str],
    applied_after: Sequence[str],
    options: StepsOptions,
) -> tuple[tuple[EntryResult, ...], tuple[EntryResult, ...]]:
    """Rounds alternate between the two states, each state first in half of the rounds
    (random ABBA order); both states draw the same parameters in a round. EXPLAIN runs
    happen in the first round."""
    sides = {"before": (before, applied_before), "after": (after, applied_after)}
    merged: dict[str, tuple[EntryResult, ...]] = {}
    for round_number, order in enumerate(balanced_orders(options.rounds, options.seed)):
        for state in order:
            conninfo, applied = sides[state]
            run_options = RunOptions(
                warmup=options.warmup, repeat=options.repeat,
                explain=options.explain if round_number == 0 else 0,
                timeout_ms=options.timeout_ms, seed=options.seed + round_number,
            )  # fmt: skip
            entries = measure_workloads(conninfo, workloads, run_options,
                                        applied_migrations=applied, pools=pools,
                                        include_apps=False)  # fmt: skip
            previous = merged.get(state)
            merged[state] = (
                entries
                if previous is None
                else tuple(merge_entries(a, b) for a, b in zip(previous, entries, strict=True))
            )
    return merged["before"], merged["after"]


def _equivalence(
    target: ServerTarget,
    backup: Backup,
    dbname: str,
    workloads: Sequence[Workload],
    pools: dict[str, dict[str, ParameterPool]],
    applied_before: Sequence[str],
    applied_after: Sequence[str],
    seed: int,
) -> tuple[Equivalence, ...]:
    results: list[Equivalence] = []
    with (
        connect(target, backup.name, autocommit=True) as old,
        connect(target, dbname, autocommit=True) as new,
    ):
        for workload in workloads:
            results += compare_results(old, new, list(workload.queries.values()),
                                       pools[workload.name], applied_before, applied_after,
                                       seed=seed)  # fmt: skip
    return tuple(results)


def _reversibility(
    target: ServerTarget, dbname: str, migration: Migration, shape: Any, snapshot: Any
) -> list[str]:
    """Down, compare with the state before the step, then up again."""
    problems: list[str] = []
    with connect(target, dbname, autocommit=True) as conn:
        try:
            apply_step(conn, migration, "down")
        except VpbenchError as exc:
            return [f"down failed: {exc}"]
        problems += shape.differences(schema_shape(conn))[:10]
        restored = snapshot_tables(conn)
        problems += [
            f"{table}: {snapshot[table].rows} rows before, {restored[table].rows} after down"
            if snapshot[table].rows != restored[table].rows
            else f"{table}: contents differ after down"
            for table in snapshot
            if restored[table] != snapshot[table]
        ]
        try:
            apply_step(conn, migration, "up")
        except VpbenchError as exc:
            problems.append(f"up after down failed: {exc}")
    return problems
