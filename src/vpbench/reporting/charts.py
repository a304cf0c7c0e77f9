"""PNG charts for pull-request reports: latency across the migration steps, before/after
ratios, distributions, costs, integrity checks and nightly trends.

Each public function takes a DataFrame, writes one PNG and returns its path. Figures are
built with matplotlib's object API on an Agg canvas, never through pyplot, so no state is
shared between calls and importing this module does not change the global backend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from vpbench.reporting.plotting import (
    HEIGHT_IN,
    OFFSET,
    PALETTE,
    TARGET_NOTE,
    Floats,
    axis_byte_unit,
    bar_bytes,
    box_style,
    draw_targets,
    figure,
    figure_legend,
    grid,
    label_axes,
    legend_right,
    mark_empty,
    median,
    ms_text,
    numeric,
    ordered,
    require,
    save,
    scale_y,
    series_style,
    set_log,
    shortened,
    wants_log_scale,
)

logger = logging.getLogger(__name__)

VERDICT_STYLE = {  # colour and marker, so that a verdict survives a grey-scale print
    "faster": ("#009E73", "o"),
    "slower": ("#D55E00", "s"),
    "unchanged": ("#7f7f7f", "D"),
    "inconclusive": ("#56B4E9", "^"),
}

CHANGE_STAR: dict[str, Any] = {"ls": "none", "marker": "*", "ms": 12, "c": "#777777", "mec": "k"}


def run_latency_chart(
    frame: pd.DataFrame, path: Path, *, title: str = "Latency per query and scenario"
) -> Path:
    """One row per entry: p50 to p95, the p95 marked by whether it meets the entry's
    target, and the target itself."""
    return save(_run_figure(frame, title), path)


def steps_latency_chart(
    frame: pd.DataFrame, path: Path, *, title: str = "Latency across the migration series"
) -> Path:
    """p95 (solid) and p50 (dotted) of each series across the steps, with the targets."""
    return save(_steps_figure(frame, title), path)


def before_after_chart(
    frame: pd.DataFrame, path: Path, *, title: str = "Before / after per query"
) -> Path:
    """Ratio new/base of the median per query, with its confidence interval and verdict."""
    return save(_before_after_figure(frame, title), path)


def distribution_chart(
    samples: pd.DataFrame, path: Path, *, title: str = "Latency distribution per query"
) -> Path:
    """Side-by-side box plots of each query's latencies in the two runs."""
    return save(_distribution_figure(samples, title), path)


def cost_chart(frame: pd.DataFrame, path: Path, *, title: str = "Cost per migration step") -> Path:
    """Index bytes added per step, and the change of insert throughput per table."""
    return save(_cost_figure(frame, title), path)


def integrity_chart(
    frame: pd.DataFrame, path: Path, *, title: str = "Integrity violations across steps"
) -> Path:
    """Heatmap of violations, checks x steps; n/a where a check does not apply."""
    return save(_integrity_figure(frame, title), path)


def trend_chart(
    frame: pd.DataFrame,
    path: Path,
    *,
    change_points: Sequence[tuple[str, int]] = (),
    title: str = "p95 across nightly runs",
) -> Path:
    """p95 per query across runs; change points are (query name, index into its series)."""
    return save(_trend_figure(frame, change_points, title), path)


def traffic_timeline_chart(
    requests: pd.DataFrame,
    statements: pd.DataFrame,
    path: Path,
    *,
    budget_ms: float | None = None,
    title: str = "The app's requests while the migration ran",
) -> Path:
    """Request latency over time (``requests``: kind, start_s, ms, outcome and, where known,
    blocked_ms; reads and writes in their own colours, those blocked by the migration's
    locks as triangles, failed ones as crosses) with the migration's statements
    (``statements``: line, text, started_s, seconds) as labelled bands."""
    return save(_timeline_figure(requests, statements, budget_ms, title), path)


def _timeline_figure(
    requests: pd.DataFrame, statements: pd.DataFrame, budget_ms: float | None, title: str
) -> Figure:
    require(requests, ["kind", "start_s", "ms", "outcome"])
    fig, (ax,) = figure(title)
    handles: list[Artist] = []
    waited = (
        numeric(requests, "blocked_ms").fillna(0.0) > 0
        if "blocked_ms" in requests
        else pd.Series(False, index=requests.index)
    )
    for index, (kind, rows) in enumerate(requests.groupby("kind", sort=True)):
        colour = PALETTE[index % len(PALETTE)]
        ok = rows[(rows["outcome"] == "ok") & ~waited[rows.index]]
        blocked = rows[(rows["outcome"] == "ok") & waited[rows.index]]
        failed = rows[rows["outcome"] != "ok"]
        ax.scatter(ok["start_s"], ok["ms"], s=6, color=colour, alpha=0.6, lw=0)
        ax.scatter(blocked["start_s"], blocked["ms"], s=22, color=colour, marker="^", lw=0)
        ax.scatter(failed["start_s"], failed["ms"], s=18, color=colour, marker="x", lw=1)
        handles.append(Line2D([], [], ls="none", marker="o", color=colour, label=f"{kind}s"))
    if waited.any():
        handles.append(
            Line2D([], [], ls="none", marker="^", color="#555555", label="blocked by its locks")
        )
    if len(requests) and (requests["outcome"] != "ok").any():
        handles.append(Line2D([], [], ls="none", marker="x", color="#555555", label="failed"))
    spans = zip(
        statements["line"].tolist(),
        statements["text"].tolist(),
        numeric(statements, "started_s").tolist(),
        numeric(statements, "seconds").tolist(),
        strict=True,
    )
    span = float(requests["start_s"].max() - requests["start_s"].min()) if len(requests) else 1.0
    labelled = 0
    for index, (line, text, started, seconds) in enumerate(spans):
        colour = PALETTE[(index + 2) % len(PALETTE)]
        ax.axvspan(started, started + max(seconds, 0.01), color=colour, alpha=0.15, lw=0)
        if seconds < 0.04 * span:
            continue  # too short to label legibly; the step document lists every statement
        label = shortened(f"line {line}: {text}", 30).replace("$", r"\$")  # not mathtext
        ax.annotate(label, (started, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -10 - 10 * (labelled % 5)), **OFFSET)  # fmt: skip
        labelled += 1
    if budget_ms:
        ax.axhline(budget_ms, color="#D55E00", ls="--", lw=1)
        ax.annotate(f"stall budget ({budget_ms / 1000:g} s)", (0, budget_ms), **TARGET_NOTE)
    values = np.asarray(requests["ms"], dtype=float) if len(requests) else np.asarray([1.0])
    set_log(ax, "y", values)
    ax.set_xlabel("seconds since the migration started")
    ax.set_ylabel("request latency")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: ms_text(v)))
    legend_right(ax, handles, first=True)
    return fig


RUN_STYLE = {  # the p95's colour and marker by target outcome
    "meets its target": ("#009E73", "o"),
    "misses its target": ("#D55E00", "s"),
    "no target": ("#7f7f7f", "D"),
}


def _run_figure(frame: pd.DataFrame, title: str) -> Figure:
    require(frame, ("name", "p50_ms", "p95_ms", "target_ms"))
    rows, size = len(frame), 9 if len(frame) < 20 else 7
    fig, (ax,) = figure(title, height=max(HEIGHT_IN, 0.32 * rows + 2.0))
    p50, p95, target = (numeric(frame, c).to_numpy() for c in ("p50_ms", "p95_ms", "target_ms"))
    every = np.concatenate([p50, p95, target])
    finite = every[np.isfinite(every) & (every > 0)]
    if finite.size and wants_log_scale(finite):
        set_log(ax, "x", finite)
    y = np.arange(rows)
    ax.hlines(y, p50, p95, color="#bbbbbb", lw=3, zorder=1)
    ax.plot(p50, y, ls="none", marker="|", ms=12, mew=2, color="#555555", label="p50")
    outcome = np.where(np.isnan(target), "no target", np.where(p95 < target, "meets its target",
                                                                "misses its target"))  # fmt: skip
    for name, (colour, marker) in RUN_STYLE.items():
        chosen = outcome == name
        if chosen.any():
            ax.plot(p95[chosen], y[chosen], ls="none", marker=marker, ms=7, color=colour,
                    label=f"p95, {name}")  # fmt: skip
    if np.isfinite(target).any():
        ax.plot(target, y, ls="none", marker="x", ms=8, mew=1.6, color="#222222", label="target")
    ax.set_yticks(y, [shortened(n) for n in frame["name"]], fontsize=size)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: ms_text(v)))
    ax.set_xlabel("latency (ms)")
    legend_right(ax, [])
    mark_empty(ax, pd.Series(p95))
    return fig


def _steps_figure(frame: pd.DataFrame, title: str) -> Figure:
    require(frame, ("step", "series", "p50_ms", "p95_ms", "target_ms"))
    steps = ordered(frame["step"])
    x = frame["step"].astype(str).map({s: i for i, s in enumerate(steps)})
    p50, p95 = numeric(frame, "p50_ms"), numeric(frame, "p95_ms")
    fig, (ax,) = figure(title)
    scale_y(ax, np.concatenate([p50.to_numpy(), p95.to_numpy()]))
    series = frame["series"].astype(str)
    for i, name in enumerate(ordered(series)):
        rows = x[series == name].sort_values(kind="stable").index
        colour, marker = series_style(i)
        ax.plot(x[rows], p95[rows], color=colour, marker=marker, lw=2, label=shortened(name))
        ax.plot(x[rows], p50[rows], color=colour, marker=".", ls=":", lw=1.5)
    draw_targets(ax, frame)
    label_axes(ax, steps, "migration step", "latency (ms)")
    styles = [
        Line2D([], [], color="#555555", lw=2, label="p95 (solid)"),
        Line2D([], [], color="#555555", lw=1.5, ls=":", label="p50 (dotted)"),
    ]
    legend_right(ax, styles)
    mark_empty(ax, p95)
    return fig


def _before_after_figure(frame: pd.DataFrame, title: str) -> Figure:
    require(frame, ("name", "ratio", "ci_low", "ci_high", "verdict", "base_p50_ms", "new_p50_ms"))
    verdicts = frame["verdict"].astype(str).str.strip().str.lower()
    unknown = sorted(set(verdicts) - set(VERDICT_STYLE))
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; expected one of {list(VERDICT_STYLE)}")
    rows, size = len(frame), 9 if len(frame) < 20 else 7
    fig, (ax,) = figure(title, height=max(HEIGHT_IN, 0.3 * rows + 2.0))
    ratio, low, high = (numeric(frame, c).to_numpy() for c in ("ratio", "ci_low", "ci_high"))
    every = np.concatenate([ratio, low, high])
    finite = every[np.isfinite(every)]
    log = finite.size > 0 and bool((finite > 0).all())
    if log:
        set_log(ax, "x", np.append(finite, 1.0))
    y = np.arange(rows)
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        chosen = (verdicts == verdict).to_numpy() & np.isfinite(ratio)
        if chosen.any():
            r = ratio[chosen]
            errors = np.nan_to_num(np.vstack([r - low[chosen], high[chosen] - r])).clip(min=0)
            ax.errorbar(
                r, y[chosen], xerr=errors, fmt=marker, c=colour, ms=7, capsize=3, label=verdict
            )
    ax.axvline(1.0, color="#333333", ls="--", lw=1, label="no change (1.0)", zorder=1)
    ax.set_yticks(y, [shortened(n) for n in frame["name"]], fontsize=size)
    ax.set_ylim(rows - 0.5, -0.5)  # first query on top
    ax.margins(x=0.08)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    base, new = numeric(frame, "base_p50_ms"), numeric(frame, "new_p50_ms")
    right = ax.secondary_yaxis("right")
    right.set_ticks(
        list(y), [f"{ms_text(b)} → {ms_text(a)} ms" for b, a in zip(base, new, strict=True)]
    )
    right.tick_params(labelsize=size)
    right.set_ylabel("p50 base → new")
    ax.set_xlabel("ratio new / base (log)" if log else "ratio new / base")
    ax.set_ylabel("query")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=5, frameon=False)
    mark_empty(ax, pd.Series(ratio))
    return fig


def _distribution_figure(samples: pd.DataFrame, title: str) -> Figure:
    require(samples, ("name", "run", "latency_ms"))
    names, runs = ordered(samples["name"]), ordered(samples["run"])
    latency = numeric(samples, "latency_ms")
    fig, (ax,) = figure(title)
    scale_y(ax, latency.to_numpy())
    groups = latency.groupby([samples["name"].astype(str), samples["run"].astype(str)])
    by_key = {key: group.dropna().to_numpy() for key, group in groups}
    width = 0.8 / max(len(runs), 1)
    handles: list[Artist] = []
    for j, run in enumerate(runs):
        colour, offset = PALETTE[j % len(PALETTE)], (j - (len(runs) - 1) / 2) * width
        found = [(i + offset, by_key.get((name, run))) for i, name in enumerate(names)]
        kept = [(position, v) for position, v in found if v is not None and v.size]
        if kept:
            positions, values = zip(*kept, strict=True)
            ax.boxplot(values, positions=positions, widths=width * 0.85, **box_style(colour))
        handles.append(
            Patch(facecolor=to_rgba(colour, 0.45), edgecolor=colour, label=shortened(run))
        )
    draw_targets(ax, samples)
    xlabel = "query (box: p25-p75, line: median, whiskers: p5-p95)"
    label_axes(ax, names, xlabel, "latency (ms)")
    ax.set_xlim(-0.6, max(len(names), 1) - 0.4)
    legend_right(ax, handles, first=True)
    mark_empty(ax, latency)
    return fig


def _cost_figure(frame: pd.DataFrame, title: str) -> Figure:
    changes = ("wal_change_quiz_attempts", "wal_change_reflections")
    require(frame, ("step", "index_bytes_added", *changes))
    steps = ordered(frame["step"])
    rows = frame.assign(step=frame["step"].astype(str)).drop_duplicates("step", keep="last")
    per_step = rows.set_index("step").reindex(steps)
    fig, (top, bottom) = figure(title, height=7.5, panels=2)
    x = np.arange(len(steps))
    added = numeric(per_step, "index_bytes_added")
    scale, unit = axis_byte_unit(float(added.abs().max()) if added.notna().any() else 0.0)
    colours = [PALETTE[1] if v < 0 else PALETTE[0] for v in added.fillna(0)]
    bars = top.bar(x, (added / scale).fillna(0), width=0.6, color=colours)
    top.bar_label(bars, [bar_bytes(v) for v in added], fontsize=8, padding=2)
    top.set_ylabel(f"index bytes added ({unit})")
    top.set_title("Index size added per step (negative = space freed)", fontsize=10)
    width = 0.8 / len(changes)
    for j, column in enumerate(changes):
        percent = numeric(per_step, column) * 100
        offset = (j - (len(changes) - 1) / 2) * width
        table = column.removeprefix("wal_change_")
        bars = bottom.bar(
            x + offset, percent.fillna(0), width * 0.9, color=PALETTE[4 + j], label=table
        )
        labels = ["n/a" if math.isnan(v) else f"{v:+.0f}%" if v else "0%" for v in percent]
        bottom.bar_label(bars, labels, fontsize=7, padding=2)
    bottom.set_title("WAL written per inserted row (positive = costlier writes)", fontsize=10)
    for panel in (top, bottom):
        panel.axhline(0, color="#333333", lw=0.8)
        panel.margins(y=0.18)
        panel.grid(axis="y", color="#dddddd", lw=0.6)
        panel.set_xlim(-0.6, max(len(steps), 1) - 0.4)
        if np.ptp(panel.get_ylim()) < 1e-9:  # all zero or n/a: no 1e-17 axis
            panel.set_ylim(-1, 1)
    label_axes(bottom, steps, "migration step", "WAL bytes per row, change (%)")
    top.set_xticks(x, [])
    legend_right(bottom, [])
    return fig


def _integrity_figure(frame: pd.DataFrame, title: str) -> Figure:
    require(frame, ("step", "check", "violations"))
    steps, checks = ordered(frame["step"]), ordered(frame["check"])
    cells = frame.assign(step=frame["step"].astype(str), check=frame["check"].astype(str))
    cells = cells.assign(violations=numeric(frame, "violations"))
    cells = cells.drop_duplicates(["check", "step"], keep="last")
    table = cells.pivot(index="check", columns="step", values="violations")
    counts = table.reindex(index=checks, columns=steps).to_numpy(dtype=float)
    fig, (ax,) = figure(title, height=max(4.5, 0.45 * len(checks) + 2.8))
    label_axes(ax, steps, "migration step", "integrity check")
    if counts.size == 0:
        mark_empty(ax, pd.Series(dtype=float))
        return fig
    # Log shading, so that 3 violations stand out from 0 next to 30 000 elsewhere.
    shade = np.log10(1 + np.clip(counts, 0, None))
    top = max(float(np.nanmax(shade)) if np.isfinite(shade).any() else 1.0, 1.0)
    cmap = colormaps["YlOrRd"].with_extremes(bad="#e6e6e6")
    ax.imshow(np.ma.masked_invalid(shade), cmap=cmap, norm=Normalize(0, top), aspect="auto")
    size = 10 if counts.shape[1] <= 8 else 8
    for (row, col), value in np.ndenumerate(counts):
        text = "n/a" if math.isnan(value) else f"{int(value):,}"
        colour = "white" if shade[row, col] > 0.6 * top else "#222222"  # NaN compares False
        ax.text(col, row, text, ha="center", va="center", fontsize=size, color=colour)
    ax.set_yticks(range(len(checks)), [shortened(c) for c in checks])
    ax.set_xticks(np.arange(len(steps) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(checks) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="both", length=0)
    ax.set_title("rows violating each check (grey: not applicable at that step)", fontsize=9)
    return fig


def _trend_figure(
    frame: pd.DataFrame, change_points: Sequence[tuple[str, int]], title: str
) -> Figure:
    """Small multiples: one panel per query, each with its own scale and target line."""
    require(frame, ("run", "name", "p95_ms"))
    runs = ordered(frame["run"])
    x = frame["run"].astype(str).map({r: i for i, r in enumerate(runs)})
    p95 = numeric(frame, "p95_ms")
    names = frame["name"].astype(str)
    queries = ordered(names) or ["(none)"]
    columns = 1 if len(queries) == 1 else 2 if len(queries) <= 4 else 3 if len(queries) <= 12 else 4
    rows = math.ceil(len(queries) / columns)
    fig, axes = grid(title, rows, columns, height=max(HEIGHT_IN, 2.3 * rows + 1.4))
    series: dict[str, tuple[Axes, Floats, Floats, str]] = {}
    for i, name in enumerate(queries):
        ax = axes[i]
        chosen = x[names == name].sort_values(kind="stable").index
        colour, marker = series_style(i)
        xs, ys = np.asarray(x[chosen], dtype=float), p95[chosen].to_numpy(dtype=float)
        series[name] = (ax, xs, ys, colour)
        ax.plot(xs, ys, color=colour, marker=marker, ms=4, lw=1.6, label="p95")
        own = frame[names == name]
        targets: Floats = (
            numeric(own, "target_ms").dropna().to_numpy() if "target_ms" in own else np.empty(0)
        )
        scale_y(ax, np.concatenate([ys, targets]))  # the target in view, on a log axis if far
        draw_targets(ax, own)
        ax.set_title(shortened(name), fontsize=9, loc="left")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: ms_text(v)))
        mark_empty(ax, pd.Series(ys, dtype=float))
    extra: list[Artist] = []
    for name, index in change_points:
        if name not in series or not 0 <= index < len(series[name][1]):
            logger.warning("change point (%s, %d) is outside the plotted series", name, index)
            continue
        ax, xs, ys, colour = series[name]
        ax.plot(xs[index], ys[index], marker="*", ms=15, color=colour, mec="black", zorder=5)
        before, after = median(ys[:index]), median(ys[index:])
        text = (
            "change" if math.isnan(before) else f"change: {ms_text(before)} → {ms_text(after)} ms"
        )
        below = not math.isnan(before) and after > before
        box: dict[str, Any] = {"boxstyle": "round,pad=0.25", "fc": "white", "ec": colour}
        ax.annotate(text, (xs[index], ys[index]), xytext=(10, -18 if below else 10), bbox=box,
                    arrowprops={"arrowstyle": "-", "color": colour}, zorder=6,
                    **OFFSET)  # fmt: skip
        extra = [Line2D([], [], label="change point", **CHANGE_STAR)]
    for ax in axes[len(queries) :]:
        ax.set_visible(False)
    for ax in axes[: len(queries)]:
        if ax in axes[len(queries) - columns : len(queries)]:  # the lowest panel of a column
            label_axes(ax, runs, "run", "")
        else:
            ax.tick_params(labelbottom=False)
    fig.supylabel("p95 latency (ms)", fontsize=10)
    figure_legend(fig, extra)
    return fig
