"""``vpbench ci nightly``: seed, migrate to the head of the series, measure, compare with
the previous night, draw the trend.

Nights are runs collected apart: ``compare`` only calls a change slower or faster when a
plan or buffer change agrees with the timing, so machine drift between nights is
"inconclusive", not a regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vpbench.analysis.comparison import Comparison, compare_sides, load_sides
from vpbench.dataset.profiles import Profile
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.migrations.sources import MigrationsLocation
from vpbench.reporting.markdown import build_report, comparison_report
from vpbench.reporting.trend import TrendResult, build_trend
from vpbench.results.documents import KIND_RUN, read_document, results_folder
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget
from vpbench.steps.final_state import prepare_final_state


@dataclass(frozen=True)
class NightlyResult:
    run: Path
    previous: Path | None
    comparison: Comparison | None
    report: Path
    trend: TrendResult


def run_nightly(
    target: ServerTarget,
    dbname: str,
    *,
    profile: Profile,
    seed: int,
    workload_paths: Sequence[Path],
    options: RunOptions,
    history: Path,
    out_dir: Path,
    label: str,
    migrations_dir: MigrationsLocation | None = None,
    start_from: StartFrom | None = None,
) -> NightlyResult:
    with results_folder(out_dir):
        previous = newest_run(history)
        prepare_final_state(target, dbname, migrations_dir, profile, seed, start_from)
        outcome = run_workloads(target, dbname, workload_paths, options, label=label,
                                out_dir=history, migrations_dir=migrations_dir)  # fmt: skip
        comparison = None
        if previous is not None:
            base, new, _ = load_sides([previous, outcome.path])
            comparison = compare_sides(base, new, paired_session=False)
            report = comparison_report(comparison, out_dir / "compare")
        else:
            report = build_report([outcome.path], out_dir / "run")
        trend = build_trend(history, out_dir / "trend")
        return NightlyResult(outcome.path, previous, comparison, report, trend)


def newest_run(history: Path) -> Path | None:
    """The latest run document in ``history`` (file names start with a UTC stamp)."""
    if not history.is_dir():
        return None
    runs = [p for p in sorted(history.glob("*.json")) if read_document(p).get("kind") == KIND_RUN]
    return runs[-1] if runs else None
