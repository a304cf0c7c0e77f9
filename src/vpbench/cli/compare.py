"""``vpbench compare``, ``ab``, ``report`` and ``trend``: judging and showing results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from vpbench.cli._common import (
    dsn_option,
    fail_on_option,
    migrations_option,
    out,
    out_dir_option,
    paired_options,
    paired_session,
    threshold_option,
    wide,
)
from vpbench.errors import CheckFailedError
from vpbench.measure.interleave import PairedOptions
from vpbench.migrations.sources import MigrationsLocation
from vpbench.server.target import resolve_target

if TYPE_CHECKING:
    from vpbench.analysis.comparison import Comparison
    from vpbench.analysis.verdicts import Threshold

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.

VERDICT_STYLE = {"faster": "green", "slower": "red", "unchanged": "", "inconclusive": "yellow"}


def comparison_table(comparison: Comparison) -> Table:
    from vpbench.reporting.units import detectable, ratio_interval

    caption = (
        "ratio [95% CI] of the median (paired: of after/before pairs, interval over rounds); "
        f"a verdict needs p < alpha and the ratio beyond {comparison.threshold} with a precise "
        "interval excluding 1, or one wholly beyond it; sees: the "
        "smallest change this comparison could have detected (80% power)"
    )
    if comparison.confounder:
        caption += f". Between the runs: {comparison.confounder}"
    if comparison.drift:
        caption += f". {comparison.drift.note}"
    table = Table(
        title=f"{comparison.new.label} vs {comparison.base.label}"
        + (" (paired session)" if comparison.paired_session else " (runs collected apart)"),
        caption=caption,
    )
    for column in ("entry", "p50 base → new", "p95 base → new", "ratio [CI]", "verdict", "sees",
                   "plan", "target"):  # fmt: skip
        table.add_column(column, justify="left" if column == "entry" else "right")
    for row in comparison.rows:
        style = VERDICT_STYLE[row.judgement.verdict]
        verdict = f"[{style}]{row.judgement.verdict}[/]" if style else row.judgement.verdict
        target = (
            ""
            if row.target_met_new is None
            else ("met" if row.target_met_new else "[red]missed[/]")
        )
        table.add_row(
            escape(row.name),
            f"{row.base_p50_ms or 0:.2f} → {row.new_p50_ms or 0:.2f} ms",
            f"{row.base_p95_ms or 0:.2f} → {row.new_p95_ms or 0:.2f} ms",
            ratio_interval(row.judgement),
            verdict,
            detectable(row.judgement),
            {True: "changed", False: "same", None: ""}[row.plan_changed],
            target,
        )
    return table


@click.command()
@click.argument(
    "runs", nargs=-1, required=True, metavar="BASE [NEW]", type=click.Path(path_type=Path)
)
@threshold_option
@click.option(
    "--alpha",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Significance level.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@fail_on_option("What makes the exit status 1.")
@click.option("--force", is_flag=True, help="Compare runs whose profile, seed or server differ.")
def compare(
    runs: tuple[Path, ...],
    threshold: Threshold,
    alpha: float,
    as_json: bool,
    fail_on: str,
    force: bool,
) -> None:
    """Judge NEW against BASE (two runs or folders), or the two states of one step or ab file."""
    from vpbench.analysis.comparison import compare_sides, load_sides

    base, new, paired = load_sides(list(runs))
    comparison = compare_sides(
        base, new, paired_session=paired, threshold=threshold, alpha=alpha, force=force
    )
    if as_json:
        out.print_json(json.dumps(comparison.to_dict(), default=str))
    else:
        wide(comparison_table(comparison))
    failure = comparison.failure(fail_on)
    if failure:
        raise CheckFailedError(failure)


@click.command()
@click.argument(
    "workloads",
    nargs=-1,
    required=True,
    metavar="WORKLOAD...",
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("--a", "side_a", required=True, help="Database name on the server, or a DSN.")
@click.option("--b", "side_b", required=True, help="Database name on the server, or a DSN.")
@paired_options(budget=f"{PairedOptions().budget_seconds:g}s")
@click.option("--seed", "seed_value", default=1, show_default=True)
@click.option("--label", help="Name for this session.")
@out_dir_option("results")
@migrations_option
@dsn_option
def ab(
    workloads: tuple[Path, ...],
    side_a: str,
    side_b: str,
    rounds: int,
    min_rounds: int,
    max_rounds: int,
    repeat: int,
    budget_ms: int,
    seed_value: int,
    label: str | None,
    out_dir: Path,
    migrations_dir: MigrationsLocation | None,
    dsn: str | None,
) -> None:
    """Measure two databases pair by pair in one session, then compare B with A."""
    from vpbench.analysis.comparison import compare_sides, load_sides
    from vpbench.measure.ab import run_ab

    target = resolve_target(dsn)
    options = paired_session(rounds, min_rounds, max_rounds, repeat, budget_ms, seed_value)
    outcome = run_ab(
        target,
        side_a,
        side_b,
        list(workloads),
        options,
        out_dir=out_dir,
        migrations_dir=migrations_dir,
        label=label,
    )
    base, new, paired = load_sides([outcome.path])
    comparison = compare_sides(base, new, paired_session=paired)
    wide(comparison_table(comparison))
    out.print(f"results: {outcome.path}")
