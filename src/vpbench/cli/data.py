"""``vpbench seed`` and ``vpbench audit``: the legacy database and its integrity."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vpbench.cli._common import (
    checks_option,
    db_option,
    dsn_option,
    out,
    progress_bars,
    resolve_database,
)
from vpbench.cli._render import audit_table, seed_table
from vpbench.dataset.audit import run_audit
from vpbench.dataset.checks_file import load_checks
from vpbench.dataset.profiles import PROFILES, get_profile, parse_dirty_rates
from vpbench.dataset.seed import seed_database
from vpbench.errors import CheckFailedError, SeedInterruptedError
from vpbench.server.target import connect

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.


@click.command()
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
    dbname: str | None,
    dsn: str | None,
) -> None:
    """Create the legacy reference database and fill it with realistic, dirty data."""
    chosen = get_profile(profile)
    dirty = parse_dirty_rates(dirty_rates)
    target, dbname = resolve_database(dsn, dbname)
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


@click.command()
@db_option
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@checks_option
@click.option(
    "--fail-on-violations",
    is_flag=True,
    help="Exit with status 1 if a data check finds a violation (yours with --checks, else the "
    "reference ones).",
)
def audit(
    dbname: str | None,
    dsn: str | None,
    as_json: bool,
    checks_path: Path | None,
    fail_on_violations: bool,
) -> None:
    """Count integrity violations: the reference schema's checks (orphans, NULL links, stale
    scores, metadata in text), generic ones for any schema, and yours (--checks)."""
    checks = load_checks(checks_path) if checks_path else ()
    target, dbname = resolve_database(dsn, dbname)
    with connect(target, dbname) as conn:
        report = run_audit(conn, checks=checks, count_rows=True)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        out.print(audit_table(report, target.describe(dbname)))
    found = report.failing_violations()
    if fail_on_violations and found:
        raise CheckFailedError(f"the audit found {found} violations")
