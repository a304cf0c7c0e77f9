"""``vpbench migrate``: status, up and down, one transaction per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import psycopg

from vpbench.cli._common import (
    Duration,
    db_option,
    dsn_option,
    err,
    lock_options,
    lock_policy,
    migrations_option,
    out,
    resolve_database,
)
from vpbench.cli._render import lock_retries, migration_table
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.errors import CheckFailedError
from vpbench.measure.availability import describe_availability
from vpbench.migrations.alembic_project import adopt_alembic_history, describe_adopted
from vpbench.migrations.apply import (
    StepApplied,
    apply_step,
    migration_states,
    plan_down,
    plan_up,
)
from vpbench.migrations.folder import Migration
from vpbench.migrations.locking import LockPolicy
from vpbench.migrations.sources import MigrationsLocation, discover_migrations, is_reference
from vpbench.server.databases import database_state, refuse_unless_owned, user_table_count
from vpbench.server.maintenance import flush_statistics, settle
from vpbench.server.target import connect
from vpbench.steps.rehearsal import apply_under_traffic

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.


@click.group()
def migrate() -> None:
    """Apply or revert migrations one transaction at a time (recorded in a ledger)."""


@migrate.command("status")
@migrations_option
@db_option
@dsn_option
def migrate_status(
    migrations_dir: MigrationsLocation | None, dbname: str | None, dsn: str | None
) -> None:
    """List migrations and whether each is applied (edited applied ones are refused)."""
    migrations = discover_migrations(migrations_dir)  # a bad folder is refused before connecting
    target, dbname = resolve_database(dsn, dbname)
    with connect(target, dbname, autocommit=True) as conn:
        states = migration_states(conn, migrations)
    out.print(migration_table(states, target.describe(dbname)))


@migrate.command("up")
@click.argument("target_id", metavar="[TARGET]", required=False)
@migrations_option
@lock_options
@click.option(
    "--under-load",
    is_flag=True,
    help="Run the app's traffic (the reference workloads, or --workload) during each step "
    "and report its stalls; a step over --max-stall (or its declared max_stall) stops here.",
)
@click.option(
    "--workload",
    "workload_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Workload file the traffic replays (repeatable; default: the reference ones).",
)
@click.option(
    "--max-stall", "max_stall_ms", default="1s", show_default=True, type=Duration(),
    help="Longest stall of the app a step may cause under load.",
)  # fmt: skip
@db_option
@dsn_option
@click.option(
    "--force",
    is_flag=True,
    help="Apply vpbench's reference series to a database vpbench did not create.",
)
def migrate_up(
    target_id: str | None,
    migrations_dir: MigrationsLocation | None,
    lock_timeout_ms: int,
    lock_attempts: int,
    under_load: bool,
    workload_paths: tuple[Path, ...],
    max_stall_ms: int,
    dbname: str | None,
    dsn: str | None,
    force: bool,
) -> None:
    """Apply pending migrations, up to and including TARGET (default: all)."""
    locks = lock_policy(lock_timeout_ms, lock_attempts)
    load = (list(workload_paths) or default_workload_paths(), max_stall_ms) if under_load else None
    _migrate("up", target_id, migrations_dir, dbname, dsn, locks, force=force, load=load)


@migrate.command("down")
@click.argument("target_id", metavar="[TARGET|base]", required=False)
@migrations_option
@lock_options
@db_option
@dsn_option
@click.option("--force", is_flag=True, help="Allow it on a database vpbench did not create.")
def migrate_down(
    target_id: str | None,
    migrations_dir: MigrationsLocation | None,
    lock_timeout_ms: int,
    lock_attempts: int,
    dbname: str | None,
    dsn: str | None,
    force: bool,
) -> None:
    """Revert the last migration, every one after TARGET, or all of them (base)."""
    locks = lock_policy(lock_timeout_ms, lock_attempts)
    _migrate("down", target_id, migrations_dir, dbname, dsn, locks, force=force)


def _migrate(
    direction: str,
    target_id: str | None,
    migrations_dir: MigrationsLocation | None,
    dbname: str | None,
    dsn: str | None,
    locks: LockPolicy,
    *,
    force: bool,
    load: tuple[list[Path], int] | None = None,
) -> None:
    target, dbname = resolve_database(dsn, dbname)
    migrations = discover_migrations(migrations_dir)
    with connect(target, dbname, autocommit=True) as conn:
        adopted = adopt_alembic_history(conn, migrations)
        if adopted:
            out.print(describe_adopted(adopted), highlight=False)
        states = migration_states(conn, migrations)
        if direction == "up" and is_reference(migrations_dir):
            refuse_unless_owned(
                database_state(target, dbname),
                operation="apply vpbench's reference migrations to",
                tables=user_table_count(conn),
                force=force,
                hint="give your own migrations with --migrations, or --force if this "
                "database is a copy of vpbench's reference schema",
            )
        if direction == "down":
            refuse_unless_owned(
                database_state(target, dbname),
                operation="revert migrations in",
                tables=user_table_count(conn),
                force=force,
            )
        plan = plan_up(states, target_id) if direction == "up" else plan_down(states, target_id)
        if not plan:
            out.print("nothing to do")
        for migration in plan:
            if not migration.transactional:
                err.print(
                    f"{migration.id} is not transactional: it runs statement by statement "
                    "(BEGIN ... COMMIT blocks as one); a failure leaves earlier ones applied",
                    highlight=False,
                )
            if load is None:
                step = _apply_or_say_where_it_stopped(conn, migration, direction, locks)
            else:
                paths, max_stall_ms = load
                step, found = apply_under_traffic(
                    target, dbname, conn, migration, migrations, locks, paths, max_stall_ms
                )
            out.print(
                f"{direction} {migration.id} ({step.seconds:.2f}s{lock_retries(step)}) — "
                f"{migration.title}",
                highlight=False,
            )
            if load is not None:
                out.print(f"  {describe_availability(found)}", highlight=False)
                if not found.passed:
                    raise CheckFailedError(
                        f"{migration.id} stalled the app beyond its budget; later migrations "
                        "were not applied"
                    )
        if plan:
            flush_statistics(conn)
            settled = settle(conn)
            if settled.changed:
                out.print(
                    f"settled: vacuumed {len(settled.vacuumed)}, analysed "
                    f"{len(settled.analyzed)} table(s), so autovacuum has nothing left to change",
                    highlight=False,
                )


def _apply_or_say_where_it_stopped(
    conn: psycopg.Connection[Any], migration: Migration, direction: str, locks: LockPolicy
) -> StepApplied:
    """Apply the step; on Ctrl-C in a non-transactional one, say what state it is left in."""
    try:
        return apply_step(conn, migration, direction, locks)
    except KeyboardInterrupt:
        if not migration.transactional:
            up = direction == "up"
            recorded = "not recorded as applied" if up else "still recorded as applied"
            undo = "its down.sql" if up else "its up.sql"
            err.print(
                f"{migration.id} {direction} stopped part-way: what it committed stays and it is "
                f"{recorded}; run `vpbench migrate {direction}` again if its SQL is written to be "
                f"re-run, or undo it with {undo}",
                highlight=False,
            )
        raise
