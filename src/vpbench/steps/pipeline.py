"""``vpbench steps``: the main job. Seed the legacy database, then for every pending
migration: settle and back up the database, apply the migration, settle it again and copy
it, then measure the copy of the state before (the backup) against the copy of the state
after in one paired session, check result equivalence, what an insert costs on each,
reversibility, storage and that no row was lost. One results document per step, plus a
summary.

Both measured states are template copies of a settled database (VACUUMed and ANALYZEd
where rows changed), made the same way and checkpointed, so a migration that changes
nothing measures two identical databases. Nothing measured is written to: write probes
roll back, and the original database is only migrated, settled and reverted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from vpbench.analysis.verdicts import Threshold
from vpbench.dataset.audit import AuditReport, run_audit
from vpbench.dataset.profiles import DirtyRates, Profile
from vpbench.dataset.seed import seed_database
from vpbench.dataset.snapshot import APPLICATION_TABLES, row_counts, schema_shape, snapshot_tables
from vpbench.errors import (
    MigrationError,
    SeriesStoppedError,
    StepsInterruptedError,
    VpbenchError,
)
from vpbench.measure.availability import Availability, describe_availability
from vpbench.measure.interleave import PairedSession, measure_paired
from vpbench.measure.metadata import collect_metadata
from vpbench.measure.runner import MeasureProgress
from vpbench.measure.writecost import WriteCost, measure_write_costs
from vpbench.migrations.apply import StepApplied, apply_step, migration_states, plan_up
from vpbench.migrations.folder import Migration, discover_migrations
from vpbench.migrations.ledger import applied_migrations
from vpbench.results.documents import ensure_writable, utc_stamp, write_document
from vpbench.server.backup import Backup, create_backup, drop_backup, restore_backup
from vpbench.server.buffers import buffer_evictor
from vpbench.server.databases import database_state, refuse_unless_owned, user_table_count
from vpbench.server.disk import data_directory, free_bytes_or_none
from vpbench.server.maintenance import Settled, flush_statistics, run_checkpoint, settle
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.checks import (
    Equivalence,
    RelationCost,
    compare_results,
    quarantined_rows,
    relation_costs,
    relation_sizes,
)
from vpbench.steps.compatibility import OldAppCheck, check_old_app
from vpbench.steps.copies import copies_outlook, describe_copy
from vpbench.steps.model import StepReport, StepsOptions, StepsResult
from vpbench.steps.phases import PhaseClock, series_time
from vpbench.steps.rehearsal import rehearse_under_load
from vpbench.steps.summary import step_document, summary_document
from vpbench.workload.preflight import check_prepared
from vpbench.workload.sampling import ParameterPool, load_workload_pools
from vpbench.workload.spec import Workload, load_workloads

log = logging.getLogger(__name__)

StepsEvent = Callable[[str], None]


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
    progress: MeasureProgress | None = None,
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
        check_prepared(conn, workloads, applied_migrations(conn))
        pending = plan_up(migration_states(conn, migrations), to)
        say(copies_outlook(conn, dbname))
    reports: list[StepReport] = []
    for number, migration in enumerate(pending, start=1):
        say(f"step {number}/{len(pending)}: {migration.id} — {migration.title}")
        report = _run_step(target, dbname, migration, workloads, options, say, progress)
        metadata = _metadata(target, dbname, migration, options, workload_paths)
        path = write_document(step_document(report, metadata), out / f"{migration.id}.json")
        reports.append(replace(report, path=path))
    spent = series_time([r.phases for r in reports], [r.peak_disk_bytes for r in reports],
                        time.perf_counter() - began)  # fmt: skip
    summary_path = write_document(
        summary_document(reports, profile.name, seed, spent), out / "summary.json"
    )
    return StepsResult(tuple(reports), out, summary_path, spent)


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
            options=options.to_dict(),
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
    progress: MeasureProgress | None,
) -> StepReport:
    def rounds_done(done: int, active: int) -> None:
        if progress:
            progress(f"{migration.id[:4]} rounds", done, options.paired.max_rounds)

    with connect(target, dbname, autocommit=True) as conn:
        data_dir = data_directory(conn)
        clock = PhaseClock(lambda: free_bytes_or_none(data_dir))
        settled_before = settle(conn)
        clock.lap("settle")
        applied_before = applied_migrations(conn)
        shape, snapshot = schema_shape(conn), snapshot_tables(conn)
        quarantine_before = quarantined_rows(conn)
        audit_before = run_audit(conn)
        sizes_before = relation_sizes(conn)
        clock.lap("audit")
    backup = create_backup(target, dbname, f"before_{migration.id[:4]}")
    clock.lap("backup")
    say(f"  backed up to {backup.name} ({describe_copy(backup)})")
    copies = [backup]
    copy: Backup | None = None
    try:
        with connect(target, dbname, autocommit=True) as conn:
            try:
                applied = apply_step(conn, migration, "up", options.step_locks(migration))
            except MigrationError as exc:
                conn.close()
                restore_backup(target, backup)
                raise MigrationError(
                    f"{exc.message}; the database was restored from its backup ({backup.method})",
                    path=exc.path, line=exc.line, sqlstate=exc.sqlstate,
                ) from None  # fmt: skip
            clock.lap("up")
            check_prepared(conn, workloads, applied_migrations(conn))
            flush_statistics(conn)
            retried = (
                f" after {len(applied.lock_retries)} lock timeouts" if applied.lock_retries else ""
            )
            say(f"  applied in {applied.seconds:.1f}s{retried}; settling and auditing")
            settled_after = settle(conn)
            clock.lap("settle")
            applied_after = applied_migrations(conn)
            audit_after = run_audit(conn)
            sizes_after = relation_sizes(conn)
            rows_after = row_counts(conn)
            quarantine_after = quarantined_rows(conn)
            clock.lap("audit")
        found: Availability | None = None
        if options.traffic is not None:
            say("  rehearsing up on a copy of the state before, under live traffic")
            found, rehearsal = rehearse_under_load(target, backup.name, migration, workloads,
                                                   applied_before, options)  # fmt: skip
            copies.append(rehearsal)
            clock.lap("rehearsal")
            say(f"  {describe_availability(found)}")
        copy = create_backup(target, dbname, f"after_{migration.id[:4]}")
        copies.append(copy)
        with connect(target, autocommit=True) as conn:
            run_checkpoint(conn)  # the copies' pages are written now, not while timing
        clock.lap("copies")
        say(f"  measuring {backup.name} against {copy.name} in paired rounds")
        before_db, after_db = target.for_database(backup.name), target.for_database(copy.name)
        pools = _parameter_pools(before_db, workloads)
        with buffer_evictor(target) as evict:
            session = measure_paired(before_db, after_db, workloads, pools, applied_before,
                                     applied_after, options.paired, progress=rounds_done,
                                     before_round=evict)  # fmt: skip
        clock.lap("paired rounds")
        say(f"  {session.rounds} rounds in {session.seconds:.0f}s; checking result equivalence")
        equivalence, old_app = _equivalence(target, backup, copy, workloads, pools,
                                            applied_before, applied_after, migration,
                                            found, options.paired.seed)  # fmt: skip
        clock.lap("equivalence")
        say(f"  the old app on the new schema: {old_app.deploy_order}")
        say("  measuring what an insert costs on both")
        with connect(target, autocommit=True) as conn:
            # Both copies clean again: the old app's rolled-back inserts just dirtied pages
            # of the after copy only, and a page's first insert after a checkpoint is what
            # the write profile counts.
            run_checkpoint(conn)
        writes = measure_write_costs(before_db, after_db, options.writes)
        clock.lap("write cost")
        _drop_if_present(target, copy)
        clock.lap("copies")
        say("  checking reversibility (down, compare, up)")
        problems = _reversibility(target, dbname, migration, shape, snapshot, backup)
        clock.lap("reversibility")
    except (KeyboardInterrupt, SeriesStoppedError) as stopped:
        if copy is not None:
            _drop_if_present(target, copy)
        if isinstance(stopped, SeriesStoppedError):
            raise
        raise StepsInterruptedError(
            f"interrupted during {migration.id}: {dbname} is consistent with its migration "
            f"ledger; the state before this step is kept in database {backup.name}"
        ) from None
    except BaseException:
        for leftover in (copy, backup):
            if leftover is not None:
                _drop_if_present(target, leftover)
        raise
    if not options.keep_backups:
        _drop_if_present(target, backup)
        clock.lap("copies")
    return _report(
        migration, tuple(copies), applied, found, (audit_before, audit_after), session,
        problems, equivalence, relation_costs(sizes_before, sizes_after), writes,
        {t: snapshot[t].rows for t in APPLICATION_TABLES}, rows_after,
        {t: quarantine_after[t] - quarantine_before[t] for t in quarantine_after},
        (settled_before, settled_after), old_app, options.threshold, clock,
    )  # fmt: skip


def _report(
    migration: Migration,
    copies: tuple[Backup, ...],
    applied: StepApplied,
    found: Availability | None,
    audits: tuple[AuditReport, AuditReport],
    session: PairedSession,
    problems: list[str],
    equivalence: tuple[Equivalence, ...],
    costs: tuple[RelationCost, ...],
    writes: tuple[WriteCost, ...],
    rows_before: dict[str, int],
    rows_after: dict[str, int],
    quarantined: dict[str, int],
    settled: tuple[Settled, Settled],
    old_app: OldAppCheck,
    threshold: Threshold,
    clock: PhaseClock,
) -> StepReport:
    unexpected = tuple(
        f"{e.query}: {e.detail}"
        for e in equivalence
        if not e.same and e.query not in migration.changes_results
    )
    return StepReport(
        migration=migration,
        backup_method=copies[0].method,
        copies=copies,
        up_seconds=applied.seconds,
        lock_retries=applied.lock_retries,
        statements=applied.statements,
        lock_holds=applied.lock_holds,
        availability=found,
        audit_before=audits[0],
        audit_after=audits[1],
        before=session.before,
        after=session.after,
        rounds=session.rounds,
        measure_seconds=session.seconds,
        reversible=not problems,
        reversibility_problems=tuple(problems),
        equivalence=equivalence,
        unexpected_changes=unexpected,
        costs=costs,
        writes=writes,
        rows_before=rows_before,
        rows_after=rows_after,
        quarantined=quarantined,
        settled_before=settled[0],
        settled_after=settled[1],
        old_app=old_app,
        threshold=threshold,
        phases=dict(clock.seconds),
        peak_disk_bytes=clock.peak_disk_bytes,
    )


def _drop_if_present(target: ServerTarget, backup: Backup) -> None:
    if database_state(target, backup.name).exists:
        drop_backup(target, backup)


def _parameter_pools(
    conninfo: str, workloads: Sequence[Workload]
) -> dict[str, dict[str, ParameterPool]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return load_workload_pools(conn, workloads)


def _equivalence(
    target: ServerTarget,
    before: Backup,
    after: Backup,
    workloads: Sequence[Workload],
    pools: dict[str, dict[str, ParameterPool]],
    applied_before: Sequence[str],
    applied_after: Sequence[str],
    migration: Migration,
    found: Availability | None,
    seed: int,
) -> tuple[tuple[Equivalence, ...], OldAppCheck]:
    """The results of the same queries before and after; the old app after, the new one
    before."""
    results: list[Equivalence] = []
    with (
        connect(target, before.name, autocommit=True) as old,
        connect(target, after.name, autocommit=True) as new,
    ):
        for workload in workloads:
            results += compare_results(old, new, list(workload.queries.values()),
                                       pools[workload.name], applied_before, applied_after,
                                       seed=seed)  # fmt: skip
        old_app = check_old_app(old, new, workloads, pools, applied_before, applied_after,
                                declared=migration.breaks_old_app,
                                failed=found.failed if found else None, seed=seed)  # fmt: skip
    return tuple(results), old_app


def _reversibility(
    target: ServerTarget,
    dbname: str,
    migration: Migration,
    shape: Any,
    snapshot: Any,
    backup: Backup,
) -> list[str]:
    """Down, compare with the state before the step, then up again: a step whose ``up``
    then fails stops the series (the next step would meet the wrong schema)."""
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
            raise SeriesStoppedError(
                f"{migration.id}: up failed again after its reversibility check's down "
                f"({exc}); {dbname} is left at the state before this step, which is also "
                f"kept in database {backup.name}; later migrations were not applied"
            ) from None
    return problems
