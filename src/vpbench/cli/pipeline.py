"""``vpbench run``, ``vpbench migrate`` and ``vpbench steps``: the measuring commands."""

from __future__ import annotations

import time
from pathlib import Path

import click

from vpbench.analysis.verdicts import Threshold
from vpbench.cli._common import (
    Duration,
    count_option,
    db_option,
    dsn_option,
    err,
    migrations_option,
    out,
    paired_options,
    paired_session,
    progress_bars,
    threshold_option,
    wide,
)
from vpbench.cli._render import migration_table, run_table, steps_table
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import PROFILES, get_profile
from vpbench.errors import CheckFailedError, RunInterruptedError
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.measure.writecost import WriteOptions
from vpbench.migrations.apply import apply_step, migration_states, plan_down, plan_up
from vpbench.migrations.folder import discover_migrations
from vpbench.server.databases import database_state, refuse_unless_owned, user_table_count
from vpbench.server.maintenance import flush_statistics, settle
from vpbench.server.target import connect, resolve_target
from vpbench.steps.model import StepsOptions
from vpbench.steps.pipeline import run_steps
from vpbench.steps.summary import answers


@click.command()
@click.argument("workloads", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--label", help="Name for this run (stored in the results and the file name).")
@count_option("--warmup", 5, minimum=0, help="Untimed executions per client first.")
@count_option("--repeat", 30, minimum=1, help="Timed executions per client.")
@count_option(
    "--explain", 5, minimum=0, help="EXPLAIN (ANALYZE, BUFFERS) executions.", dest="explain_runs"
)
@count_option("--clients", 1, minimum=1, help="Concurrent sessions, like pgbench -c.")
@click.option(
    "--timeout",
    "timeout_ms",
    default="10s",
    show_default=True,
    type=Duration(),
    help="statement_timeout for every statement.",
)
@click.option(
    "--seed", "seed_value", default=1, show_default=True, help="Seed for parameter sampling."
)
@click.option(
    "--out",
    "out_dir",
    default="results",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the run file.",
)
@click.option(
    "--migrations",
    "migrations_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Migrations folder whose ids variants name (default: the reference series).",
)
@db_option
@dsn_option
def run(
    workloads: tuple[str, ...],
    label: str | None,
    warmup: int,
    repeat: int,
    explain_runs: int,
    clients: int,
    timeout_ms: int,
    seed_value: int,
    out_dir: Path,
    migrations_dir: Path | None,
    dbname: str,
    dsn: str | None,
) -> None:
    """Measure workload queries and scenarios (default: the reference workloads); write one
    results file."""
    options = RunOptions(
        warmup=warmup,
        repeat=repeat,
        explain=explain_runs,
        clients=clients,
        timeout_ms=timeout_ms,
        seed=seed_value,
    )
    target = resolve_target(dsn)
    try:
        with progress_bars(f"measuring on {target.describe(dbname)} ({target.source})") as tick:
            outcome = run_workloads(
                target,
                dbname,
                workloads or [str(p) for p in default_workload_paths()],
                options,
                label=label,
                out_dir=out_dir,
                migrations_dir=migrations_dir,
                progress=tick,
            )
    except KeyboardInterrupt:
        raise RunInterruptedError("run interrupted: no results file was written") from None
    wide(run_table(outcome))
    for failure in outcome.failures:
        err.print(
            f"vpbench: error: {failure.path}: query {failure.name!r} failed: {failure.error}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if outcome.failures:
        raise CheckFailedError(f"{len(outcome.failures)} of the entries failed")


@click.group()
def migrate() -> None:
    """Apply or revert migrations one transaction at a time (recorded in a ledger)."""


@migrate.command("status")
@migrations_option
@db_option
@dsn_option
def migrate_status(migrations_dir: Path | None, dbname: str, dsn: str | None) -> None:
    """List migrations and whether each is applied (edited applied ones are refused)."""
    target = resolve_target(dsn)
    with connect(target, dbname, autocommit=True) as conn:
        states = migration_states(conn, discover_migrations(migrations_dir))
    out.print(migration_table(states, target.describe(dbname)))


@migrate.command("up")
@click.argument("target_id", metavar="[TARGET]", required=False)
@migrations_option
@db_option
@dsn_option
def migrate_up(
    target_id: str | None, migrations_dir: Path | None, dbname: str, dsn: str | None
) -> None:
    """Apply pending migrations, up to and including TARGET (default: all)."""
    _migrate("up", target_id, migrations_dir, dbname, dsn, force=False)


@migrate.command("down")
@click.argument("target_id", metavar="[TARGET|base]", required=False)
@migrations_option
@db_option
@dsn_option
@click.option("--force", is_flag=True, help="Allow it on a database vpbench did not create.")
def migrate_down(
    target_id: str | None,
    migrations_dir: Path | None,
    dbname: str,
    dsn: str | None,
    force: bool,
) -> None:
    """Revert the last migration, every one after TARGET, or all of them (base)."""
    _migrate("down", target_id, migrations_dir, dbname, dsn, force=force)


def _migrate(
    direction: str,
    target_id: str | None,
    migrations_dir: Path | None,
    dbname: str,
    dsn: str | None,
    *,
    force: bool,
) -> None:
    target = resolve_target(dsn)
    migrations = discover_migrations(migrations_dir)
    with connect(target, dbname, autocommit=True) as conn:
        states = migration_states(conn, migrations)
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
                    f"{migration.id} is not transactional (e.g. CREATE INDEX CONCURRENTLY): "
                    "it runs statement by statement",
                    highlight=False,
                )
            step = apply_step(conn, migration, direction)
            out.print(
                f"{direction} {migration.id} ({step.seconds:.2f}s) — {migration.title}",
                highlight=False,
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


@click.command()
@click.option("--profile", default="small", show_default=True, metavar="|".join(PROFILES))
@click.option("--seed", "seed_value", default=1, show_default=True)
@click.option(
    "--workload",
    "workload_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Workload file (repeatable; default: workloads/*.toml).",
)
@migrations_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Results folder (default: results/steps-<timestamp>/).",
)
@click.option("--to", "to", metavar="TARGET", help="Stop after this migration.")
@paired_options(budget=f"{StepsOptions().paired.budget_seconds:g}s")
@threshold_option
@click.option("--keep-backups", is_flag=True, help="Keep each step's backup database.")
@click.option("--force", is_flag=True, help="Run on a database vpbench did not create.")
@db_option
@dsn_option
def steps(
    profile: str,
    seed_value: int,
    workload_paths: tuple[Path, ...],
    migrations_dir: Path | None,
    out_dir: Path | None,
    to: str | None,
    rounds: int,
    max_rounds: int,
    repeat: int,
    budget_ms: int,
    threshold: Threshold,
    keep_backups: bool,
    force: bool,
    dbname: str,
    dsn: str | None,
) -> None:
    """The main job: seed, then apply every migration measured, audited and checked."""
    chosen = get_profile(profile)
    paths = list(workload_paths) or default_workload_paths()
    options = StepsOptions(
        paired=paired_session(rounds, max_rounds, repeat, budget_ms, seed_value),
        writes=WriteOptions(seed=seed_value),
        threshold=threshold,
        keep_backups=keep_backups,
    )
    target = resolve_target(dsn)
    began = time.monotonic()

    def event(message: str) -> None:
        err.print(f"[dim]{time.monotonic() - began:6.1f}s[/] {message}", highlight=False)

    with progress_bars("each step's paired rounds (an entry stops once it is precise)") as tick:
        result = run_steps(
            target,
            dbname,
            profile=chosen,
            seed=seed_value,
            workload_paths=paths,
            migrations_dir=migrations_dir,
            out_dir=out_dir,
            to=to,
            options=options,
            force=force,
            on_event=event,
            progress=tick,
        )
    wide(steps_table(result))
    for question, answer in answers(result.steps).items():
        out.print(f"{question.replace('_', ' ')}: {answer}", highlight=False)
    out.print(f"results: {result.out_dir} ({result.seconds:.0f}s)")
    failed = [step.migration.id for step in result.steps if not step.passed]
    if failed:
        raise CheckFailedError(f"steps failed their checks: {', '.join(failed)}")
