"""``vpbench report``, ``vpbench trend`` and ``vpbench publish``: Markdown, charts, the
nightly trend and the history as a site to browse."""

from __future__ import annotations

from pathlib import Path

import click

from vpbench.analysis.verdicts import DEFAULT_ALPHA, Threshold
from vpbench.cli._common import out, threshold_option

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.


@click.command()
@click.argument(
    "inputs", nargs=-1, required=True, metavar="RUN_OR_DIR...", type=click.Path(path_type=Path)
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@threshold_option
@click.option(
    "--alpha", default=DEFAULT_ALPHA, show_default=True, type=click.FloatRange(0, 1, min_open=True)
)
@click.option("--force", is_flag=True, help="Compare runs whose profile, seed or server differ.")
def report(
    inputs: tuple[Path, ...], out_dir: Path, threshold: Threshold, alpha: float, force: bool
) -> None:
    """Markdown + PNG charts for a pull request, from a steps folder, a step/ab file or two runs."""
    from vpbench.reporting.markdown import build_report

    path = build_report(list(inputs), out_dir, threshold=threshold, alpha=alpha, force=force)
    out.print(f"report: {path}")


@click.command()
@click.argument("history", metavar="HISTORY_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def trend(history: Path, out_dir: Path) -> None:
    """p95 of each query across stored runs, with change points flagged."""
    from vpbench.reporting.trend import build_trend

    result = build_trend(history, out_dir)
    flagged = sum(len(points) for points in result.change_points.values())
    out.print(f"trend: {result.markdown} ({flagged} change point(s)); chart: {result.chart}")


@click.command()
@click.argument("history", metavar="HISTORY_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--repository", metavar="URL",
              help="Web address commits link to, e.g. https://github.com/org/app (default: "
              "GitHub Actions' repository, else origin's).")  # fmt: skip
def publish(history: Path, out_dir: Path, repository: str | None) -> None:
    """The nightly history as a static site: index.html, assets and a page per night."""
    from vpbench.reporting.dashboard import publish as publish_site

    site = publish_site(history, out_dir, repository=repository)
    for line in site.unreadable:
        out.print(f"[yellow]left out: {line}[/]")
    out.print(f"site: {site.index} ({site.nights} night(s), {site.entries} queries and scenarios)")
