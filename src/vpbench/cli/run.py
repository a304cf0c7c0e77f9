"""``vpbench run``: measure workload files on one database."""

from __future__ import annotations

from pathlib import Path

import click

from vpbench.cli._common import (
    Duration,
    count_option,
    db_option,
    dsn_option,
    err,
    no_report_option,
    out,
    out_dir_option,
    progress_bars,
    resolve_database,
    variant_migrations_option,
    wide,
)
from vpbench.cli._render import run_table
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.errors import CheckFailedError, RunInterruptedError
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.migrations.sources import MigrationsLocation

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.


@click.command()
@click.argument("workloads", nargs=-1, metavar="[WORKLOAD...]", type=click.Path(dir_okay=False))
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
    "--max-time",
    "max_time_ms",
    default="10s",
    show_default=True,
    type=Duration(),
    help="Each entry's timed executions stop once they have taken this long (after "
    "--min-rounds), its warm-ups and EXPLAIN runs after their first.",
)
@count_option(
    "--min-rounds", 5, minimum=1, help="Timed executions per client before --max-time counts."
)
@click.option(
    "--seed", "seed_value", default=1, show_default=True, help="Seed for parameter sampling."
)
@out_dir_option("results", "Folder for the run file.")
@variant_migrations_option
@no_report_option
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
    max_time_ms: int,
    min_rounds: int,
    seed_value: int,
    out_dir: Path,
    migrations_dir: MigrationsLocation | None,
    no_report: bool,
    dbname: str | None,
    dsn: str | None,
) -> None:
    """Measure workload queries and scenarios (default: the reference workloads); write one
    results file, and its report (report.md with a chart) in a folder beside it."""
    options = RunOptions(
        warmup=warmup,
        repeat=repeat,
        explain=explain_runs,
        clients=clients,
        timeout_ms=timeout_ms,
        seed=seed_value,
        max_time_s=max_time_ms / 1000,
        min_rounds=min_rounds,
    )
    target, dbname = resolve_database(dsn, dbname)
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
    if not no_report:
        from vpbench.reporting.markdown import build_report

        folder = outcome.path.with_name(f"{outcome.path.stem}-report")
        out.print(f"report: {build_report([outcome.path], folder)}", highlight=False)
    for failure in outcome.failures:
        err.print(
            f"vpbench: error: {failure.path}: query {failure.name!r} failed: {failure.error}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if outcome.failures:
        raise CheckFailedError(f"{len(outcome.failures)} of the entries failed")
