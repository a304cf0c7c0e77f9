"""``vpbench steps``: the main job. Seed the legacy database, then for every pending
migration: copy the settled working database (the backup, and the state before), rehearse
``up`` under live traffic on a copy of that copy, apply ``up`` to the working database,
settle and read it, copy it (the state after), and measure the two copies in one paired
session; then result equivalence, the old app on the new schema and what an insert costs
on both, and ``down`` on the copy of the state after, compared with the state before. One
results document per step, plus a summary.

Each pass over the data is made once: ``up`` twice (at rest on the working database, and
under traffic on a throw-away copy, whose rolled-back writes must not reach a measured
state), ``down`` once, on a copy, so the working database never goes down and up again;
each state is settled, audited and snapshotted once, by the step that reaches it, and the
next step starts from those figures. Both measured states are copies of a settled database
made the same way (clones where the server can) and checkpointed, so a migration that
changes nothing measures two identical databases. Nothing measured is written to before
its measurement: write probes roll back, and the working database is only migrated and
settled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from vpbench.analysis.verdicts import Threshold
from vpbench.dataset.profiles import DirtyRates, Profile
from vpbench.dataset.snapshot import table_keys
from vpbench.errors import (
    MigrationError,
    StepsInterruptedError,
    UnsafeOperationError,
    VpbenchError,
)
from vpbench.measure.availability import Availability, describe_availability
from vpbench.measure.interleave import PairedSession, measure_paired
from vpbench.measure.metadata import collect_metadata
from vpbench.measure.runner import MeasureProgress
from vpbench.measure.writecost import WriteCost, measure_write_costs
from vpbench.migrations.alembic_project import adopt_alembic_history, describe_adopted
from vpbench.migrations.apply import (
    StepApplied,
    apply_step,
    check_target,
    migration_states,
    plan_up,
)
from vpbench.migrations.folder import Migration
from vpbench.migrations.ledger import applied_migrations, ensure_ledger
from vpbench.migrations.sources import MigrationsLocation, discover_migrations, is_reference
from vpbench.reporting.provenance import describe_data
from vpbench.results.documents import results_folder, utc_stamp, write_document
from vpbench.server.backup import Backup, create_backup, drop_backup, restore_backup
from vpbench.server.buffers import buffer_evictor
from vpbench.server.databases import (
    database_state,
    refuse_unless_owned,
    user_table_count,
)
from vpbench.server.disk import data_directory, free_bytes_or_none
from vpbench.server.maintenance import flush_statistics, run_checkpoint
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget, connect, open_connection
from vpbench.server.wal import WalMeter, WalScope
from vpbench.steps.checks import (
    Equivalence,
    compare_results,
    relation_costs,
)
from vpbench.steps.compatibility import OldAppCheck, check_old_app
from vpbench.steps.copies import copies_outlook, describe_copy
from vpbench.steps.model import StepReport, StepsOptions, StepsResult
from vpbench.steps.phases import PhaseClock, series_time
from vpbench.steps.rehearsal import rehearse_under_load
from vpbench.steps.start import start_database
from vpbench.steps.state import StateFacts, settle_and_read
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
    migrations_dir: MigrationsLocation | None = None,
    out_dir: Path | None = None,
    to: str | None = None,
    options: StepsOptions = StepsOptions(),
    dirty: DirtyRates | None = None,
    force: bool = False,
    on_event: StepsEvent | None = None,
    progress: MeasureProgress | None = None,
    start_from: StartFrom | None = None,
) -> StepsResult:
    """Run the whole measured migration series on a freshly seeded database, or on a copy
    of ``start_from`` (a team's database or dump, which is only read)."""
    began = time.perf_counter()
    say = on_event or (lambda message: None)
    migrations = discover_migrations(migrations_dir)
    if to is not None:
        check_target(to, [m.id for m in migrations], base_allowed=False)  # before any seeding
    workloads = load_workloads(workload_paths, [m.id for m in migrations])
    with results_folder(out_dir or Path("results") / f"steps-{utc_stamp()}") as out:
        existing = database_state(target, dbname)
        if existing.exists and not existing.marked:
            with connect(target, dbname) as conn:
                tables = user_table_count(conn)
            refuse_unless_owned(existing, operation="run steps on (it is reseeded)", tables=tables,
                                force=force)  # fmt: skip
        if start_from is not None and is_reference(migrations_dir) and not force:
            raise UnsafeOperationError(
                f"steps {start_from.describe()} would apply vpbench's reference migrations "
                "to a database vpbench did not create",
                hint="give your own migrations with --migrations, or --force if it is a copy "
                "of vpbench's reference schema",
            )
        data = start_database(target, dbname, profile=profile, seed=seed, start_from=start_from,
                              dirty=dirty, force=force, say=say, run="steps")  # fmt: skip
        with connect(target, dbname, autocommit=True) as conn:
            adopted = adopt_alembic_history(conn, migrations)
            if adopted:
                say(describe_adopted(adopted))
            check_prepared(conn, workloads, applied_migrations(conn))
            pending = plan_up(migration_states(conn, migrations), to)
            say(copies_outlook(conn, dbname))
        reports: list[StepReport] = []
        state: StateFacts | None = None
        for number, migration in enumerate(pending, start=1):
            say(f"step {number}/{len(pending)}: {migration.id} — {migration.title}")
            if migration.online:
                say(f"  runs online through alembic: {migration.online}")
            report, state = _run_step(target, dbname, migration, workloads, options, state, say,
                                      progress)  # fmt: skip
            metadata = _metadata(target, dbname, migration, options, workload_paths)
            path = write_document(step_document(report, metadata), out / f"{migration.id}.json")
            reports.append(replace(report, path=path))
        spent = series_time([r.phases for r in reports], [r.peak_disk_bytes for r in reports],
                            time.perf_counter() - began)  # fmt: skip
        summary_path = write_document(summary_document(reports, data, spent), out / "summary.json")
        return StepsResult(tuple(reports), out, summary_path, spent, describe_data(data))


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
    start: StateFacts | None,
    say: StepsEvent,
    progress: MeasureProgress | None,
) -> tuple[StepReport, StateFacts]:
    """One step, from the working database's settled state ``start`` (read here when the
    series begins); returns the step's report and the settled state it left."""

    def rounds_done(done: int, active: int) -> None:
        if progress:
            progress(f"{migration.id} rounds", done, options.paired.max_rounds)

    with connect(target, dbname, autocommit=True) as conn:
        data_dir = data_directory(conn)
        clock = PhaseClock(lambda: free_bytes_or_none(data_dir))
        before = start or settle_and_read(conn, clock, checks=options.checks)
    backup = create_backup(target, dbname, f"before_{migration.id}")
    clock.lap("backup")
    say(f"  backed up to {backup.name} ({describe_copy(backup)})")
    copies = [backup]
    copy: Backup | None = None
    try:
        before_db = target.for_database(backup.name)
        pools = _parameter_pools(before_db, workloads)  # the rehearsal's and the rounds'
        clock.lap("parameters")
        found: Availability | None = None
        if options.traffic is not None:
            say("  rehearsing up on a copy of the state before, under live traffic")
            found, rehearsal, up_s = rehearse_under_load(target, backup, migration,
                                                         workloads, pools, before.applied,
                                                         options)  # fmt: skip
            copies.append(rehearsal)
            clock.lap("rehearsal", of_which=("up under load", up_s))
            say(f"  {describe_availability(found)}")
        with connect(target, dbname, autocommit=True) as conn:
            ensure_ledger(conn)
            wal = WalMeter(conn)
            try:
                applied = apply_step(conn, migration, "up", options.step_locks(migration))
            except MigrationError as exc:
                conn.close()
                restore_backup(target, backup)
                raise MigrationError(
                    f"{exc.message}; the database was restored from its backup ({backup.method})",
                    path=exc.path, line=exc.line, sqlstate=exc.sqlstate,
                ) from None  # fmt: skip
            wal_bytes = wal.written()
            clock.lap("up")
            check_prepared(conn, workloads, applied_migrations(conn))
            flush_statistics(conn)
            retried = (
                f" after {len(applied.lock_retries)} lock timeouts" if applied.lock_retries else ""
            )
            say(f"  applied in {applied.seconds:.1f}s{retried}; settling and auditing")
            after = settle_and_read(conn, clock, before, options.checks)
        copy = create_backup(target, dbname, f"after_{migration.id}")
        copies.append(copy)
        with connect(target, autocommit=True) as conn:
            run_checkpoint(conn)  # the copies' pages are written now, not while timing
        clock.lap("copies")
        say(f"  measuring {backup.name} against {copy.name} in paired rounds")
        after_db = target.for_database(copy.name)
        with buffer_evictor(target) as evict:
            session = measure_paired(before_db, after_db, workloads, pools, before.applied,
                                     after.applied, options.paired, progress=rounds_done,
                                     before_round=evict)  # fmt: skip
        clock.lap("paired rounds")
        say(f"  {session.rounds} rounds in {session.seconds:.0f}s; checking result equivalence")
        sides = _Sides(target, backup, copy, before.applied, after.applied, pools,
                       options.paired.seed)  # fmt: skip
        equivalence = sides.equivalence(workloads)
        clock.lap("equivalence")
        old_app = sides.old_app(workloads, migration, found)
        clock.lap("old app")
        say(f"  the old app on the new schema: {old_app.deploy_order}")
        say("  measuring what an insert costs on both")
        with connect(target, autocommit=True) as conn:
            # Both copies clean again: the old app's rolled-back inserts just dirtied pages
            # of the after copy only, and a page's first insert after a checkpoint is what
            # the write profile counts.
            run_checkpoint(conn)
        writes = measure_write_costs(before_db, after_db, options.writes)
        clock.lap("write cost")
        if not options.keep_backups:
            _drop_if_present(target, backup)  # the working database is past its up
            clock.lap("copies")
        say(f"  checking reversibility (down on {copy.name}, compared with the state before)")
        problems, down_s = _reversibility(target, copy, migration, before, after)
        clock.lap("reversibility", of_which=("down", down_s))
    except KeyboardInterrupt:
        if copy is not None:
            _drop_if_present(target, copy)
        kept = (
            f"the state before this step is kept in database {backup.name}"
            if database_state(target, backup.name).exists
            else "its up is applied"
        )
        raise StepsInterruptedError(
            f"interrupted during {migration.id}: {dbname} is consistent with its migration "
            f"ledger; {kept}"
        ) from None
    except BaseException:
        for leftover in (copy, backup):
            if leftover is not None:
                _drop_if_present(target, leftover)
        raise
    _drop_if_present(target, copy)
    clock.lap("copies")
    up = (applied, wal_bytes, wal.scope)
    report = _report(migration, tuple(copies), up, found, (before, after), session, problems,
                     equivalence, writes, old_app, options.threshold, clock)  # fmt: skip
    return report, after


def _report(
    migration: Migration,
    copies: tuple[Backup, ...],
    up: tuple[StepApplied, int, WalScope],
    found: Availability | None,
    states: tuple[StateFacts, StateFacts],
    session: PairedSession,
    problems: list[str],
    equivalence: tuple[Equivalence, ...],
    writes: tuple[WriteCost, ...],
    old_app: OldAppCheck,
    threshold: Threshold,
    clock: PhaseClock,
) -> StepReport:
    before, after = states
    applied, wal_bytes, wal_scope = up
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
        up_wal_bytes=wal_bytes,
        up_wal_scope=wal_scope,
        lock_retries=applied.lock_retries,
        statements=applied.statements,
        lock_holds=applied.lock_holds,
        availability=found,
        audit_before=before.audit,
        audit_after=after.audit,
        before=session.before,
        after=session.after,
        rounds=session.rounds,
        measure_seconds=session.seconds,
        reversible=not problems,
        reversibility_problems=tuple(problems),
        equivalence=equivalence,
        unexpected_changes=unexpected,
        costs=relation_costs(before.sizes, after.sizes),
        writes=writes,
        rows_before=before.rows,
        rows_after=after.rows,
        quarantined={t: after.quarantined[t] - before.quarantined[t] for t in after.quarantined},
        settled_before=before.settled,
        settled_after=after.settled,
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
    with open_connection(conninfo, autocommit=True) as conn:
        return load_workload_pools(conn, workloads)


@dataclass(frozen=True)
class _Sides:
    """The two measured copies of a step, and what the checks on both need."""

    target: ServerTarget
    before: Backup
    after: Backup
    applied_before: Sequence[str]
    applied_after: Sequence[str]
    pools: dict[str, dict[str, ParameterPool]]
    seed: int

    @contextmanager
    def _connections(
        self,
    ) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
        """A session on each copy: the state before, the state after."""
        with (
            connect(self.target, self.before.name, autocommit=True) as old,
            connect(self.target, self.after.name, autocommit=True) as new,
        ):
            yield old, new

    def equivalence(self, workloads: Sequence[Workload]) -> tuple[Equivalence, ...]:
        """The results of the same queries, with the same parameters, on both."""
        results: list[Equivalence] = []
        with self._connections() as (old, new):
            for workload in workloads:
                results += compare_results(old, new, list(workload.queries.values()),
                                           self.pools[workload.name], self.applied_before,
                                           self.applied_after, seed=self.seed)  # fmt: skip
        return tuple(results)

    def old_app(
        self, workloads: Sequence[Workload], migration: Migration, found: Availability | None
    ) -> OldAppCheck:
        """The old app on the state after, the new one on the state before."""
        with self._connections() as (old, new):
            return check_old_app(old, new, workloads, self.pools, self.applied_before,
                                 self.applied_after, declared=migration.breaks_old_app,
                                 deploy_before=migration.deploy_before,
                                 failed=found.failed if found else None,
                                 seed=self.seed)  # fmt: skip


def _reversibility(
    target: ServerTarget,
    copy: Backup,
    migration: Migration,
    before: StateFacts,
    after: StateFacts,
) -> tuple[list[str], float]:
    """``down`` on the copy of the state after the step (measured by then), compared with
    the state before it; the working database stays where ``up`` took it. Returns the
    differences and the seconds ``down`` ran."""
    with connect(target, copy.name, autocommit=True) as conn:
        keys = table_keys(conn)  # the probes' sessions have ended: their counts are in
        began = time.perf_counter()
        try:
            down = apply_step(conn, migration, "down")
        except VpbenchError as exc:
            return [f"down failed: {exc}"], time.perf_counter() - began
        flush_statistics(conn)
        return before.differences(conn, after, keys), down.seconds
