"""``vpbench steps``: the main job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vpbench.analysis.verdicts import Threshold
from vpbench.cli._common import (
    Duration,
    checks_option,
    count_option,
    db_option,
    dsn_option,
    err,
    lock_options,
    lock_policy,
    migrations_option,
    no_report_option,
    out,
    out_dir_option,
    paired_options,
    paired_session,
    profile_options,
    progress_bars,
    resolve_database,
    start_from,
    start_from_options,
    threshold_option,
    wide,
    workload_files_option,
)
from vpbench.cli._render import steps_table, time_table
from vpbench.dataset.checks_file import load_checks
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.errors import CheckFailedError
from vpbench.measure.traffic import TrafficOptions
from vpbench.measure.writecost import WriteOptions
from vpbench.migrations.sources import MigrationsLocation
from vpbench.steps.model import StepsOptions
from vpbench.steps.pipeline import run_steps
from vpbench.steps.summary import answers

if TYPE_CHECKING:
    from vpbench.analysis.verdicts import Threshold

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.


@click.command()
@profile_options("small")
@workload_files_option
@migrations_option
@out_dir_option(None, "Results folder (default: results/steps-<timestamp>/).")
@click.option("--to", "to", metavar="TARGET", help="Stop after this migration.")
@paired_options(budget=f"{StepsOptions().paired.budget_seconds:g}s")
@threshold_option
@lock_options
@click.option(
    "--max-stall",
    "max_stall_ms",
    default="1s",
    show_default=True,
    type=Duration(),
    help="Longest stall of the live app a step may cause (migration.toml max_stall overrides).",
)
@count_option("--readers", 2, minimum=0, help="Reader sessions of the live traffic.")
@count_option("--writers", 1, minimum=0, help="Writer sessions of the live traffic.")
@click.option("--no-traffic", is_flag=True, help="Do not rehearse each up under live traffic.")
@click.option("--keep-backups", is_flag=True, help="Keep each step's backup database.")
@start_from_options
@click.option(
    "--force",
    is_flag=True,
    help="Replace a database vpbench did not create; apply the reference migrations to --from "
    "data.",
)
@checks_option
@click.option(
    "--fail-on-violations",
    is_flag=True,
    help="Exit with status 1 if the state the series ends in breaks a data check (yours with "
    "--checks, else the reference ones).",
)
@no_report_option
@db_option
@dsn_option
def steps(
    profile: str,
    seed_value: int,
    workload_paths: tuple[Path, ...],
    migrations_dir: MigrationsLocation | None,
    out_dir: Path | None,
    to: str | None,
    rounds: int,
    min_rounds: int,
    max_rounds: int,
    repeat: int,
    budget_ms: int,
    threshold: Threshold,
    lock_timeout_ms: int,
    lock_attempts: int,
    max_stall_ms: int,
    readers: int,
    writers: int,
    no_traffic: bool,
    keep_backups: bool,
    from_database: str | None,
    from_dump: Path | None,
    force: bool,
    checks_path: Path | None,
    fail_on_violations: bool,
    no_report: bool,
    dbname: str | None,
    dsn: str | None,
) -> None:
    """The main job: seed (or copy --from a team's data), then apply every migration
    measured, audited and checked."""
    source = start_from(from_database, from_dump)
    chosen = get_profile(profile)
    paths = list(workload_paths) or default_workload_paths()
    options = StepsOptions(
        paired=paired_session(rounds, min_rounds, max_rounds, repeat, budget_ms, seed_value),
        writes=WriteOptions(seed=seed_value),
        threshold=threshold,
        locks=lock_policy(lock_timeout_ms, lock_attempts),
        traffic=None
        if no_traffic
        else TrafficOptions(readers=readers, writers=writers, seed=seed_value),
        max_stall_ms=max_stall_ms,
        keep_backups=keep_backups,
        checks=load_checks(checks_path) if checks_path else (),
    )
    target, dbname = resolve_database(dsn, dbname)
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
            start_from=source,
        )
    wide(steps_table(result))
    wide(time_table(result))
    for question, answer in answers(result.steps).items():
        out.print(f"{question.replace('_', ' ')}: {answer}", highlight=False)
    out.print(f"data: {result.data}", highlight=False)
    out.print(f"results: {result.out_dir} ({result.seconds:.0f}s)")
    if not no_report:
        from vpbench.reporting.markdown import build_report

        report = build_report([result.out_dir], result.out_dir, threshold=threshold)
        out.print(f"report: {report} (charts beside it)", highlight=False)
    failed = [step.migration.id for step in result.steps if not step.passed]
    if failed:
        raise CheckFailedError(f"steps failed their checks: {', '.join(failed)}")
    if fail_on_violations and result.steps:
        found = result.steps[-1].audit_after.failing_violations()
        if found:
            raise CheckFailedError(f"the series ends with {found:,} violation(s) of "
                                   f"{'your' if checks_path else 'the'} data checks")  # fmt: skip
