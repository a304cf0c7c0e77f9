"""``vpbench predict``: each step's cost at production size, from runs at smaller sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from vpbench.cli._common import Duration, TableRows, out, out_dir_option, wide
from vpbench.errors import CheckFailedError, UsageError

if TYPE_CHECKING:
    from vpbench.analysis.prediction import SeriesPrediction


@click.command()
@click.argument(
    "runs", nargs=-1, required=True, metavar="STEPS_DIR...",
    type=click.Path(file_okay=False, path_type=Path),
)  # fmt: skip
@click.option("--rows", "rows", multiple=True, type=TableRows(),
              help="Production rows of a table (repeatable); a step's other tables scale "
              "with it.")  # fmt: skip
@click.option("--dsn", "production_dsn", metavar="DSN",
              help="Read the rows from this server's catalog estimates (pg_class.reltuples, "
              "read-only: no row is read, nothing is written).")  # fmt: skip
@click.option("--against", type=click.Path(file_okay=False, path_type=Path),
              help="A steps folder measured at the size to predict: print each prediction's "
              "error.")  # fmt: skip
@click.option("--max-stall", "max_stall_ms", type=Duration(), default=None,
              help="Stall budget of every step (default: its max_stall, else 1s).")  # fmt: skip
@click.option("--fail-on", type=click.Choice(("budget", "none")), default="none",
              show_default=True,
              help="budget: exit 1 when a step is predicted over its stall budget.")  # fmt: skip
@out_dir_option(None, help="Write report.md and a log-log chart per step here.")
def predict(
    runs: tuple[Path, ...],
    rows: tuple[tuple[str, float], ...],
    production_dsn: str | None,
    against: Path | None,
    max_stall_ms: int | None,
    fail_on: str,
    out_dir: Path | None,
) -> None:
    """What each migration will cost at production size: duration, lock holds, stalls, WAL
    and bytes fitted over runs of one series at two sizes or more."""
    from vpbench.analysis.prediction import (
        ProductionSize,
        check_rows,
        predict_series,
        read_series_run,
        series_tables,
    )
    from vpbench.reporting.prediction_report import verdict_text, write_prediction_report
    from vpbench.results.documents import results_folder

    if sum(bool(given) for given in (rows, production_dsn, against)) != 1:
        raise UsageError("give the production size one way: --rows TABLE=N..., --dsn or --against")
    series = [read_series_run(folder) for folder in runs]
    measured = read_series_run(against) if against else None
    for run in [*series, *([measured] if measured else [])]:
        if not run.complete:
            out.print(f"{run.folder} stopped before its summary: its {len(run.steps)} "
                      "finished step(s) are read", soft_wrap=True)  # fmt: skip
    check_rows(series, dict(rows))
    production_rows: dict[str, float] = {}
    if measured is not None:
        source = f"the sizes of {measured.folder}"
    else:
        tables = series_tables(series)
        production_rows, source = ProductionSize(dict(rows), production_dsn, "--dsn").read(tables)
        if production_dsn:
            out.print(f"read pg_class.reltuples of {len(tables)} tables ({source}; catalog "
                      "statistics only, in a read-only transaction: no row was read, nothing "
                      "was written)", soft_wrap=True)  # fmt: skip
    prediction = predict_series(
        series, production_rows, source, max_stall_ms=max_stall_ms, measured=measured
    )
    wide(_table(prediction, against is not None))
    for step in prediction.steps:
        if step.verdict in ("over", "may exceed") or step.missing:
            out.print(verdict_text(step), soft_wrap=True)
    if out_dir is not None:
        with results_folder(out_dir):
            out.print(f"report: {write_prediction_report(prediction, out_dir)}")
    if fail_on == "budget" and (over := prediction.over_budget):
        raise CheckFailedError(
            f"{len(over)} step(s) predicted over their stall budget: "
            + "; ".join(s.migration for s in over)
        )


def _table(prediction: SeriesPrediction, against: bool) -> Table:
    from vpbench.reporting.prediction_report import (
        error_text,
        measured_text,
        predicted_text,
        rows_text,
    )

    table = Table(title=f"Predicted at production size ({prediction.production})")
    for column in ("step", "figure", "measured", "model", "predicted at 95%"):
        table.add_column(column)
    if against:
        table.add_column("measured there")
    for step in prediction.steps:
        name = step.migration if step.missing else f"{step.migration}\n{rows_text(step.rows)} rows"
        for i, found in enumerate(step.figures):
            cells = [
                name if i == 0 else "",
                found.label,
                measured_text(found),
                found.predicted.model if found.predicted else "",
                predicted_text(found) if not step.missing else step.missing if i == 0 else "",
            ]
            table.add_row(*cells, *([error_text(found)] if against else []))
        table.add_section()
    return table
