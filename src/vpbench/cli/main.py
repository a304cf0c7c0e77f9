"""The ``vpbench`` command: parse arguments, call one library function, render the result."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from vpbench import __version__
from vpbench.cli._common import configure_logging, db_option, dsn_option, err, out, progress_bars
from vpbench.cli._render import audit_table, seed_table
from vpbench.cli.compare import ab, compare, report, trend
from vpbench.cli.pipeline import migrate, run, steps
from vpbench.dataset.audit import run_audit
from vpbench.dataset.profiles import PROFILES, get_profile, parse_dirty_rates
from vpbench.dataset.seed import seed_database
from vpbench.errors import (
    BadInputError,
    CheckFailedError,
    InterruptError,
    SeedInterruptedError,
    VpbenchError,
)
from vpbench.server.databases import drop_database
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import connect, resolve_target


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vpbench")
@click.option(
    "-v", "--verbose", count=True, help="Log what vpbench does to stderr (-vv: in detail)."
)
def cli(verbose: int) -> None:
    """Benchmark the learning app's PostgreSQL queries across measured schema migrations."""
    configure_logging(verbose)


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
        with progress_bars(banner) as on_progress:
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
        raise CheckFailedError(f"the audit found {report.total_violations} violations")


cli.add_command(run)
cli.add_command(migrate)
cli.add_command(steps)
cli.add_command(compare)
cli.add_command(ab)
cli.add_command(report)
cli.add_command(trend)


EXIT_CODES: tuple[tuple[type[VpbenchError], int], ...] = (
    (InterruptError, 130),
    (BadInputError, 2),
    (VpbenchError, 1),
)
"""The one map from kinds of failure to exit statuses, first match wins: 2 for input vpbench
cannot use, 1 for a failure or a failed check (regression, breach, violation), 130 for
Ctrl-C; 0 when the command ran and found nothing wrong."""


def exit_code(error: VpbenchError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: expected failures become one line on stderr and an exit status."""
    try:
        cli.main(args=argv, prog_name="vpbench", standalone_mode=False)
    except click.ClickException as exc:  # click's own usage errors: status 2
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        err.print("vpbench: interrupted", highlight=False)
        sys.exit(130)
    except CheckFailedError as exc:
        err.print(f"vpbench: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exit_code(exc))
    except VpbenchError as exc:
        err.print(f"vpbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exit_code(exc))
    sys.exit(0)
