"""A log-log chart of one step's costs against the rows it touched: the measured points,
the fitted growth, the predicted interval at the production size (marked), and the value
measured there when it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from vpbench.analysis.prediction import FigurePrediction, StepPrediction
from vpbench.reporting.plotting import PALETTE, figure, save

_PANELS = (("s", "seconds"), ("B", "bytes"))


def growth_chart(step: StepPrediction, path: Path) -> Path:
    """Time figures in one panel, byte figures in the other (a panel with none is left out)."""
    panels = [(unit, label) for unit, label in _PANELS if any(f.unit == unit for f in step.figures)]
    fig, axes = figure(f"{step.migration}: cost against rows touched", panels=len(panels))
    for ax, (unit, label) in zip(axes, panels, strict=True):
        shown = [f for f in step.figures if f.unit == unit]
        for colour, found in zip(PALETTE * 4, shown, strict=False):
            _draw(ax, found, step.rows, colour)
        ax.axvline(step.rows, color="#444444", ls="--", lw=1, label="production size")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows of the tables the step touched")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)


def _draw(ax: Axes, found: FigurePrediction, rows: float, colour: str) -> None:
    points = [p for p in found.points if p.value > 0 and p.rows > 0]
    ax.plot([p.rows for p in points], [p.value for p in points], "o", color=colour,
            label=found.label)  # fmt: skip
    predicted = found.predicted
    if predicted is None or predicted.value <= 0 or rows <= 0:
        return
    low_rows = min((p.rows for p in points), default=rows)
    xs = np.geomspace(low_rows, rows, 50)
    mean = np.mean([[max(g.at(x), 1e-12) for x in xs] for g in predicted.fits], axis=0)
    ax.plot(xs, mean, "-", color=colour, lw=1)
    ax.errorbar([rows], [predicted.value], yerr=[[predicted.value - predicted.low],
                [predicted.high - predicted.value]], fmt="s", color=colour, capsize=4)  # fmt: skip
    if found.measured:
        ax.plot([rows], [found.measured], "*", color=colour, ms=12, mec="k")
