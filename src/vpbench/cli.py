"""The ``vpbench`` command: parse arguments, call one library function, render the result."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn
from rich.table import Table

from vpbench import __version__
from vpbench._embedded import EmbeddedPostgres
from vpbench._render import audit_table, migration_table, run_table, seed_table, steps_table
from vpbench.audit import run_audit
from vpbench.databases import database_state, drop_database, refuse_unless_owned, user_table_count
from vpbench.errors import RunInterruptedError, SeedInterruptedError, VpbenchError
from vpbench.fixtures import fixtures_dir
from vpbench.measure import RunOptions
from vpbench.migrate import apply_step, migration_states, plan_down, plan_up
from vpbench.migrations import discover_migrations
from vpbench.profiles import PROFILES, get_profile, parse_dirty_rates
from vpbench.run import run_workloads
from vpbench.seed import seed_database
from vpbench.server import DEFAULT_DATABASE, connect, resolve_target
from vpbench.steps import StepsOptions, run_steps
from vpbench.steps_report import answers

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000}
WIDE_TABLE = 150
"""Columns for wide tables when stdout is not a terminal (CI logs, pipes)."""


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        metavar="DSN",
        help="PostgreSQL server to use (default: VPBENCH_DSN, DATABASE_URL, PG* variables, "
        "else the embedded server).",
    )(func)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "dbname",
        default=DEFAULT_DATABASE,
        show_default=True,
        help="Database vpbench works in (created and marked as vpbench's if missing).",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vpbench")
def cli() -> None:
    """Benchmark the learning app's PostgreSQL queries across measured schema migrations."""


@cli.group()
def db() -> None:
    """Control the embedded PostgreSQL server (used when no DSN is given)."""


@db.command("start")
def db_start() -> None:
    """Start the embedded server, or reuse the one already running."""
    status = EmbeddedPostgres().start()
    out.print(f"embedded PostgreSQL {status.version} running (pid {status.pid}) at {status.dsn()}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server; no postgres process of ours is left."""
    stopped = EmbeddedPostgres().stop()
    out.print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@db.command("status")
def db_status() -> None:
    """Show whether the embedded server runs, where, and its data directory."""
    status = EmbeddedPostgres().status()
    state = f"running (pid {status.pid}, port {status.port})" if status.running else "stopped"
    out.print(f"embedded PostgreSQL {status.version}: {state}")
    out.print(f"data directory: {status.data_dir}")
    if status.running:
        out.print(f"url: {status.dsn()}")


@db.command("url")
@db_option
def db_url(dbname: str) -> None:
    """Print the connection URL of a database on the embedded server (starts it if needed)."""
    out.print(EmbeddedPostgres().start().dsn(dbname), highlight=False, soft_wrap=True)


@db.command("drop")
@db_option
@dsn_option
@click.option("--force", is_flag=True, help="Drop it even though vpbench did not create it.")
def db_drop(dbname: str, dsn: str | None, force: bool) -> None:
    """Drop a database vpbench created."""
    dropped = drop_database(resolve_target(dsn), dbname, force=force)
    out.print(f"dropped database {dbname}" if dropped else f"database {dbname} does not exist")


@cli.command()
@click.option(
    "--profile",
    default="tiny",
    show_default=True,
    metavar="|".join(PROFILES),
    help="Scale profile.",
)
@click.option("--seed", "seed_value", default=1, show_default=True, help="Random seed.")
@click.option(
    "--dirty-rate",
    "dirty_rates",
    multiple=True,
    metavar="KNOB=VALUE",
    help="Override a dirty-data rate (0..0.5), e.g. stale_scores=0.1; all=0 for clean data.",
)
@click.option(
    "--force", is_flag=True, help="Seed even a non-empty database vpbench did not create."
)
@db_option
@dsn_option
def seed(
    profile: str,
    seed_value: int,
    dirty_rates: tuple[str, ...],
    force: bool,
    dbname: str,
    dsn: str | None,
) -> None:
    """Create the legacy reference database and fill it with realistic, dirty data."""
    chosen = get_profile(profile)
    dirty = parse_dirty_rates(dirty_rates)
    target = resolve_target(dsn)
    banner = f"seeding {target.describe(dbname)} ({target.source}) with profile {chosen.name}"
    try:
        with _progress_bars(banner) as on_progress:
            result = seed_database(
                target,
                dbname,
                chosen,
                seed=seed_value,
                dirty=dirty,
                force=force,
                progress=on_progress,
            )
    except KeyboardInterrupt:
        raise SeedInterruptedError(
            f"seeding interrupted: the transaction was rolled back and database {dbname!r} "
            "is as it was before"
        ) from None
    out.print(seed_table(result))


@contextmanager
def _progress_bars(banner: str) -> Iterator[Callable[[str, int, int], None]]:
    """A bar per table, shown from the first progress report on (so a refusal before any
    work prints nothing but its error)."""
    tasks: dict[str, TaskID] = {}
    progress = Progress(
        "[progress.description]{task.description:<14}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )

    def update(table: str, done: int, total: int) -> None:
        if not tasks:
            err.print(banner, highlight=False)
            progress.start()
        if table not in tasks:
            tasks[table] = progress.add_task(table, total=total)
        progress.update(tasks[table], completed=done)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()


@cli.command()
@db_option
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--fail-on-violations", is_flag=True, help="Exit with status 1 if any check finds a violation."
)
def audit(dbname: str, dsn: str | None, as_json: bool, fail_on_violations: bool) -> None:
    """Count integrity violations: orphans, NULL links, stale scores, metadata in text."""
    target = resolve_target(dsn)
    with connect(target, dbname) as conn:
        report = run_audit(conn)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        out.print(audit_table(report, target.describe(dbname)))
    if fail_on_violations and report.total_violations:
        sys.exit(1)


class Duration(click.ParamType[Any, int]):
    """``500ms``, ``5s``, ``2m`` or a bare number of seconds, as milliseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        unit = next((u for u in ("ms", "s", "m") if text.endswith(u)), "")
        try:
            amount = float(text.removesuffix(unit) if unit else text)
        except ValueError:
            self.fail(f"{value!r} is not a duration such as 500ms, 5s or 2m", param, ctx)
        milliseconds = int(amount * DURATION_UNITS[unit or "s"])
        if milliseconds <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return milliseconds


@cli.command()
@click.argument("workloads", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--label", help="Name for this run (stored in the results and the file name).")
@click.option(
    "--warmup",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Untimed executions per client first.",
)
@click.option(
    "--repeat",
    default=30,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed executions per client.",
)
@click.option(
    "--explain",
    "explain_runs",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="EXPLAIN (ANALYZE, BUFFERS) executions.",
)
@click.option(
    "--clients",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Concurrent sessions, like pgbench -c.",
)
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
    """Measure workload queries and scenarios; write one results file."""
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
        with _progress_bars(f"measuring on {target.describe(dbname)} ({target.source})") as tick:
            outcome = run_workloads(
                target,
                dbname,
                workloads,
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
        sys.exit(1)


def migrations_option(func: F) -> F:
    return click.option(
        "--migrations",
        "migrations_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Migrations folder (default: the reference series in fixtures/migrations).",
    )(func)


@cli.group()
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


@cli.command()
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
@click.option(
    "--rounds",
    default=6,
    show_default=True,
    type=click.IntRange(min=1),
    help="Alternating before/after rounds per step.",
)
@click.option(
    "--repeat",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed executions per entry, state and round.",
)
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
    repeat: int,
    keep_backups: bool,
    force: bool,
    dbname: str,
    dsn: str | None,
) -> None:
    """The main job: seed, then apply every migration measured, audited and checked."""
    chosen = get_profile(profile)
    paths = list(workload_paths) or sorted((fixtures_dir().parent / "workloads").glob("*.toml"))
    options = StepsOptions(rounds=rounds, repeat=repeat, seed=seed_value, keep_backups=keep_backups)
    target = resolve_target(dsn)
    began = time.monotonic()

    def event(message: str) -> None:
        err.print(f"[dim]{time.monotonic() - began:6.1f}s[/] {message}", highlight=False)

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
    )
    wide(steps_table(result))
    for question, answer in answers(result.steps).items():
        out.print(f"{question.replace('_', ' ')}: {answer}", highlight=False)
    out.print(f"results: {result.out_dir} ({result.seconds:.0f}s)")
    if not result.passed:
        sys.exit(1)


def wide(table: Table) -> None:
    """Print a wide table at full width even when stdout is not a terminal."""
    (out if out.is_terminal else Console(width=WIDE_TABLE)).print(table)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: expected failures become one line on stderr and an exit code."""
    try:
        result = cli.main(args=argv, prog_name="vpbench", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        err.print("vpbench: interrupted", highlight=False)
        sys.exit(130)
    except VpbenchError as exc:
        err.print(f"vpbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
