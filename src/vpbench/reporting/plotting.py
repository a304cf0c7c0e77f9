"""What every chart shares: the page size, colours and markers, scales, target lines,
axes, legends, and a PNG written atomically. Figures use matplotlib's object API on an Agg
canvas, never pyplot, so no state is shared between calls."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from vpbench.reporting.units import byte_unit, human_bytes

Floats = npt.NDArray[np.floating[Any]]

# 10 x 5.5 in at 110 dpi is 1100 x 605 px: readable at the width of a GitHub PR comment.
WIDTH_IN, HEIGHT_IN, MAX_HEIGHT_IN, DPI = 10.0, 5.5, 10.5, 110
LABEL_LIMIT = 40
LOG_SPAN = 20.0
# Okabe-Ito: distinguishable with the common colour-vision deficiencies; weak yellow last.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
TARGET_NAMES = {100.0: "page target (100 ms)", 20.0: "query target (20 ms)"}
OFFSET: dict[str, Any] = {"textcoords": "offset points", "fontsize": 8}
TARGET_NOTE: dict[str, Any] = {  # target name at the left edge, readable over the data
    "xycoords": ("axes fraction", "data"),
    "xytext": (0, 2),
    "va": "bottom",
    "bbox": {"fc": "white", "ec": "none", "alpha": 0.75, "pad": 1},
    **OFFSET,
}
LEGEND_RIGHT: dict[str, Any] = {  # outside the axes, so that a legend never hides data
    "loc": "upper left",
    "bbox_to_anchor": (1.01, 1.0),
    "borderaxespad": 0,
    "fontsize": 8,
    "frameon": False,
}


def series_style(index: int) -> tuple[str, str]:
    """The colour and marker of the ``index``-th series of a chart: every pair distinct up
    to len(PALETTE) * len(MARKERS) series (colour cycles first, then the marker)."""
    if index >= len(PALETTE) * len(MARKERS):
        raise ValueError(f"more than {len(PALETTE) * len(MARKERS)} series in one chart")
    return PALETTE[index % len(PALETTE)], MARKERS[index // len(PALETTE)]


def require(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"chart input is missing required column(s): {', '.join(missing)}")


def numeric(frame: pd.DataFrame, column: str) -> pd.Series[float]:
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def ordered(values: pd.Series) -> list[str]:
    """Distinct labels in order of first appearance."""
    return list(dict.fromkeys(values.astype(str)))


def shortened(label: object, limit: int = LABEL_LIMIT) -> str:
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ms_text(value: float) -> str:
    if math.isnan(value):
        return "?"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def median(values: Floats) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def axis_byte_unit(largest: float) -> tuple[float, str]:
    """``units.byte_unit`` for an axis title, which spells out "bytes"."""
    scale, unit = byte_unit(largest)
    return scale, "bytes" if unit == "B" else unit


def bar_bytes(value: float) -> str:
    """A bar's label: signed bytes in human units, "0", or "n/a" for a missing value."""
    if math.isnan(value) or value == 0:
        return "n/a" if math.isnan(value) else "0"
    return human_bytes(value, signed=True)


def wants_log_scale(values: npt.ArrayLike) -> bool:
    """Log scale when the finite values span more than LOG_SPAN times; zero or negative
    values cannot be drawn on a log axis, so they keep a linear one."""
    array = np.asarray(values, dtype=float).ravel()
    array = array[np.isfinite(array)]
    if array.size == 0 or array.min() <= 0:
        return False
    return bool(array.max() / array.min() > LOG_SPAN)


def scale_y(ax: Axes, values: Floats) -> None:
    if wants_log_scale(values):
        set_log(ax, "y", values)
    ax.grid(axis="y", which="major", color="#dddddd", lw=0.6)


def set_log(ax: Axes, which: str, values: Floats) -> None:
    finite = values[np.isfinite(values) & (values > 0)]
    decades = math.log10(finite.max() / finite.min()) if finite.size else 0.0
    # Denser ticks on short ranges, so that a log axis never shows a single label.
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1 else (1.0, 2.0, 5.0)
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=subs if decades <= 4 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def draw_targets(ax: Axes, frame: pd.DataFrame) -> None:
    """A dashed line per distinct target, named in the legend and at the left edge."""
    if "target_ms" not in frame.columns:
        return
    targets = sorted({float(t) for t in numeric(frame, "target_ms").dropna() if t > 0})
    for i, ms in enumerate(reversed(targets)):
        label = TARGET_NAMES.get(ms, f"target {ms:g} ms")
        colour = ("#222222", "#666666", "#999999")[i % 3]
        ax.axhline(ms, color=colour, ls="--", lw=1.4, label=label, zorder=1)
        ax.annotate(label, (0.005, ms), color=colour, **TARGET_NOTE)


def label_axes(ax: Axes, categories: Sequence[str], xlabel: str, ylabel: str) -> None:
    """Category names as x ticks; slanted (more steeply when many) and thinned beyond 30,
    so that neighbouring labels never overlap."""
    labels = [shortened(c) for c in categories]
    every = max(1, math.ceil(len(labels) / 30))
    ax.set_xticks(range(0, len(labels), every), labels[::every])
    if len(labels) > 6 or max(map(len, labels), default=0) > 10:
        slant = 45 if len(labels) > 12 else 30
        for tick in ax.get_xticklabels():
            tick.set(rotation=slant, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def legend_right(ax: Axes, extra: Sequence[Artist], *, first: bool = False) -> None:
    handles: list[Artist] = list(ax.get_legend_handles_labels()[0])
    handles = [*extra, *handles] if first else [*handles, *extra]
    if handles:
        ax.legend(handles=handles, **LEGEND_RIGHT)


def box_style(colour: str) -> dict[str, Any]:
    return {
        "whis": (5, 95),
        "patch_artist": True,
        "manage_ticks": False,
        "boxprops": {"facecolor": to_rgba(colour, 0.45), "edgecolor": colour},
        "medianprops": {"color": "black"},
        "whiskerprops": {"color": colour},
        "capprops": {"color": colour},
        "flierprops": {"marker": ".", "ms": 3, "mec": colour, "alpha": 0.5},
    }


def mark_empty(ax: Axes, values: pd.Series[float]) -> None:
    if not np.isfinite(values.to_numpy(dtype=float)).any():
        style: dict[str, Any] = {"ha": "center", "va": "center", "color": "#777777", "fontsize": 14}
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, **style)
        ax.set_yticks([])


def figure(title: str, *, height: float = HEIGHT_IN, panels: int = 1) -> tuple[Figure, list[Axes]]:
    fig = canvas(title, height)
    return fig, [fig.add_subplot(panels, 1, i + 1) for i in range(panels)]


def grid(title: str, rows: int, columns: int, *, height: float) -> tuple[Figure, list[Axes]]:
    """Panels in ``rows`` x ``columns`` that share the x axis."""
    fig = canvas(title, height)
    first = fig.add_subplot(rows, columns, 1)
    rest = [fig.add_subplot(rows, columns, i, sharex=first) for i in range(2, rows * columns + 1)]
    return fig, [first, *rest]


def figure_legend(fig: Figure, extra: Sequence[Artist]) -> None:
    """One legend under the panels: each distinct label once (targets, change points)."""
    seen: dict[str, Artist] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label != "p95":
                seen.setdefault(label, handle)
    handles = [*seen.values(), *extra]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False, fontsize=8)


def canvas(title: str, height: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, min(height, MAX_HEIGHT_IN)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write through a temporary file, so that an interruption leaves no half-written PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fig.savefig(partial, format="png", dpi=DPI)
    partial.replace(path)
    return path
