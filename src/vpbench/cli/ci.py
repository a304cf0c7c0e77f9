"""``vpbench ci pr`` and ``vpbench ci nightly``: what the CI workflows run (they only call
these, so everything they do runs the same on a laptop)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vpbench.cli._common import (
    FAIL_ON,
    F,
    TableRows,
    db_option,
    dsn_option,
    err,
    fail_on_option,
    out,
    out_dir_option,
    paired_options,
    paired_session,
    profile_options,
    resolve_database,
    start_from,
    start_from_options,
    threshold_option,
    wide,
)
from vpbench.cli.compare import comparison_table
from vpbench.dataset.profiles import get_profile
from vpbench.errors import CheckFailedError, UsageError
from vpbench.measure.metadata import git_commit
from vpbench.steps.pr_migrations import MIGRATION_CHECKS

if TYPE_CHECKING:
    from vpbench.analysis.verdicts import Threshold


def repository_options(command: F) -> F:
    """--repo, --migrations-path and --workloads-path: where the commits are read."""
    for option in reversed([
        click.option("--repo", default=".", show_default=True,
                     type=click.Path(file_okay=False, exists=True, path_type=Path),
                     help="The git repository (the head, unless named: its working tree)."),
        click.option("--migrations-path", default="fixtures/migrations", show_default=True,
                     help="Migrations folder inside the repository."),
        click.option("--workloads-path", default="workloads", show_default=True,
                     help="Folder of workload files (*.toml) inside the repository."),
    ]):  # fmt: skip
        command = option(command)
    return command


@click.group()
def ci() -> None:
    """The CI jobs: a migration pull request judged paired, and the nightly run."""


@ci.command("pr")
@click.option("--base", required=True, metavar="REF", help="Base commit (e.g. the PR's base).")
@click.option("--head", metavar="REF", help="Head commit (default: the working tree).")
@repository_options
@profile_options("small")
@start_from_options
@paired_options(budget="60s")
@threshold_option
@click.option(
    "--fail-on",
    multiple=True,
    type=click.Choice((*FAIL_ON, *MIGRATION_CHECKS, "migrations", "none")),
    default=("regression",),
    show_default=True,
    help="What makes the exit status 1 (repeatable): the final states' regression, target "
    "or any; a new migration over its stall budget, breaking the deployed app, not "
    "reversible or losing integrity (migrations: all four); none.",
)
@click.option("--rows", "rows", multiple=True, type=TableRows(),
              help="Production rows of a table (repeatable): the new migrations are run again "
              "at the profile below --profile and predicted at that size.")  # fmt: skip
@click.option("--production-dsn", metavar="DSN",
              help="Read the production rows from this server's catalog estimates instead "
              "(pg_class.reltuples, read-only: no row is read, nothing is written).")  # fmt: skip
@out_dir_option("results/pr")
@db_option
@dsn_option
def ci_pr(
    base: str,
    head: str | None,
    repo: Path,
    migrations_path: str,
    workloads_path: str,
    profile: str,
    seed_value: int,
    from_database: str | None,
    from_dump: Path | None,
    rounds: int,
    min_rounds: int,
    max_rounds: int,
    repeat: int,
    budget_ms: int,
    threshold: Threshold,
    fail_on: tuple[str, ...],
    rows: tuple[tuple[str, float], ...],
    production_dsn: str | None,
    out_dir: Path,
    dbname: str | None,
    dsn: str | None,
) -> None:
    """The head's new migrations, each through steps from the base's final state (seeded,
    or a copy of --from), then both final states measured paired; report.md, charts and
    the pull-request comment (comment.md)."""
    from vpbench.analysis.prediction import ProductionSize
    from vpbench.steps.pull_request import Layout, judge_pull_request, pull_request_failures

    if rows and production_dsn:
        raise UsageError("give the production size one way: --rows TABLE=N... or --production-dsn")
    production = ProductionSize(dict(rows), production_dsn) if rows or production_dsn else None

    target, dbname = resolve_database(dsn, dbname)
    result = judge_pull_request(
        target,
        repo,
        base,
        head,
        profile=get_profile(profile),
        seed=seed_value,
        options=paired_session(rounds, min_rounds, max_rounds, repeat, budget_ms, seed_value),
        out_dir=out_dir,
        layout=Layout(migrations_path, workloads_path),
        databases=(f"{dbname}_pr_base", f"{dbname}_pr_head"),
        threshold=threshold,
        say=lambda message: err.print(message, highlight=False),
        start_from=start_from(from_database, from_dump),
        production=production,
    )
    wide(comparison_table(result.comparison))
    out.print(f"report: {result.report}\ncomment: {result.comment}", highlight=False)
    failures = pull_request_failures(result, frozenset(fail_on))
    if failures:
        raise CheckFailedError("; ".join(failures))


@ci.command("nightly")
@repository_options
@profile_options("medium")
@start_from_options
@paired_options(budget="60s")
@click.option("--label", help="Name of tonight's run (default: nightly-<commit or date>).")
@click.option(
    "--history",
    default="results/history",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the nights' documents (kept between nights).",
)
@out_dir_option("results/nightly")
@fail_on_option(
    "Exit 1 on a regression against the last night that passed, a target breach, either, never.",
    never=True,
)
@db_option
@dsn_option
def ci_nightly(
    repo: Path,
    migrations_path: str,
    workloads_path: str,
    profile: str,
    seed_value: int,
    from_database: str | None,
    from_dump: Path | None,
    rounds: int,
    min_rounds: int,
    max_rounds: int,
    repeat: int,
    budget_ms: int,
    label: str | None,
    history: Path,
    out_dir: Path,
    fail_on: str,
    dbname: str | None,
    dsn: str | None,
) -> None:
    """Tonight's head against the commit of the last night that passed: both rebuilt from
    the same data, measured pair by pair in one session; the night goes into the history,
    and the trend is drawn."""
    from vpbench.steps.nightly import run_nightly
    from vpbench.steps.pull_request import Layout

    target, dbname = resolve_database(dsn, dbname)
    result = run_nightly(
        target,
        dbname,
        repo=repo,
        layout=Layout(migrations_path, workloads_path),
        profile=get_profile(profile),
        seed=seed_value,
        options=paired_session(rounds, min_rounds, max_rounds, repeat, budget_ms, seed_value),
        history=history,
        out_dir=out_dir,
        label=label or _nightly_label(repo),
        start_from=start_from(from_database, from_dump),
        say=lambda message: err.print(message, highlight=False),
    )
    out.print(f"tonight: {result.night}", highlight=False)
    wide(comparison_table(result.comparison))
    if result.base is None:
        out.print("first night: measured against itself (it reads zero)", highlight=False)
    out.print(f"report: {result.report}\ntrend: {result.trend.markdown}", highlight=False)
    failure = result.comparison.failure(fail_on) if fail_on != "none" else None
    if failure:
        base = result.base.id if result.base else "itself"
        raise CheckFailedError(f"tonight against night {base}: {failure}")


def _nightly_label(repo: Path) -> str:
    """``nightly-<commit>`` in a git checkout, else ``nightly-<date>`` (also without git)."""
    commit = git_commit(repo)
    return f"nightly-{commit[:7]}" if commit else f"nightly-{datetime.now(UTC):%Y%m%d}"
