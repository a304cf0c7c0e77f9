"""``vpbench trend``: the p95 of each query across stored nightly runs, with change points."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vpbench.analysis.changepoint import ChangePoint, detect_change_points
from vpbench.errors import ResultsFormatError
from vpbench.reporting import charts
from vpbench.results.documents import results_folder
from vpbench.results.frames import load


@dataclass(frozen=True)
class TrendResult:
    chart: Path
    markdown: Path
    change_points: dict[str, list[ChangePoint]]


def p95_history(history: Path) -> pd.DataFrame:
    """One row per (night, query): night label (date or commit), p95 and target, oldest
    first. A night is a run, or a paired nightly session (its "after" side: tonight)."""
    frames = load(history)
    nights = (frames.runs["kind"] == "run") | frames.runs["nightly"]
    runs = frames.runs[nights].sort_values("timestamp")
    if runs.empty:
        raise ResultsFormatError("no run results in the history folder", path=history)
    labels = {
        r.run: f"{str(r.timestamp)[:10]} {str(r.git_commit or '')[:7]}".strip()
        for r in runs.itertuples()
    }
    tonight = {r.run: r.after_label for r in runs.itertuples() if r.after_label is not None}
    entries = frames.entries[frames.entries["run"].isin(labels)]
    pairs = zip(entries["run"], entries["state"], strict=True)
    entries = entries[[tonight.get(run) in (None, state) for run, state in pairs]]
    order = {run: i for i, run in enumerate(runs["run"])}
    table = entries.assign(order=entries["run"].map(order), run_label=entries["run"].map(labels))
    table = table.sort_values(["order", "name"])
    return pd.DataFrame(
        {
            "run": table["run_label"] + " #" + table["order"].astype(str),
            "name": table["name"],
            "p95_ms": table["p95_ms"].astype(float),
            "target_ms": table["target_ms"].astype(float),
        }
    ).reset_index(drop=True)


def build_trend(history: Path, out_dir: Path) -> TrendResult:
    with results_folder(out_dir):
        frame = p95_history(history)
        found = {
            str(name): detect_change_points(group["p95_ms"].tolist())
            for name, group in frame.groupby("name", sort=False)
        }
        marks = [(name, point.index) for name, points in found.items() for point in points]
        chart = charts.trend_chart(frame, out_dir / "trend.png", change_points=marks)
        runs = list(dict.fromkeys(frame["run"]))
        lines = [
            f"**{len(runs)} runs, {frame['name'].nunique()} queries:** "
            + (f"{len(marks)} change point(s)." if marks else "no change point."),
            "",
        ]
        lines += ["| query | run | p95 before → after (ms) | change |", "|---|---|---|---|"]
        for name, points in found.items():
            series_runs = frame[frame["name"] == name]["run"].tolist()
            for point in points:
                lines.append(
                    f"| `{name}` | {series_runs[point.index]} | {point.before:.2f} → "
                    f"{point.after:.2f} | {point.ratio - 1:+.0%} |"
                )
        lines += ["", "![p95 across runs](trend.png)", ""]
        markdown = out_dir / "trend.md"
        markdown.write_text("\n".join(lines), encoding="utf-8")
        return TrendResult(chart, markdown, found)
