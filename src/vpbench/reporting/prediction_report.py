"""The prediction of a series at production size in words: cells for tables, the sentence a
step over its budget gets, and ``report.md`` with a log-log chart per step."""

from __future__ import annotations

from pathlib import Path

from vpbench.analysis.prediction import FigurePrediction, SeriesPrediction, StepPrediction
from vpbench.reporting.growth_chart import growth_chart
from vpbench.reporting.units import bytes_interval, elapsed, elapsed_interval, human_bytes

REPORT = "report.md"


def value_text(found: FigurePrediction, value: float) -> str:
    return elapsed(value) if found.unit == "s" else human_bytes(value)


def predicted_text(found: FigurePrediction) -> str:
    """``~9.1 min [7.0, 12]``; why there is none when there is not."""
    p = found.predicted
    if p is None:
        return found.note
    show = elapsed_interval if found.unit == "s" else bytes_interval
    text = show(p.value, p.low, p.high)
    said = "; ".join(c for c in (found.caveat, found.bound and f"bounded: {found.bound}") if c)
    return f"{text} ({said})" if said else text


def measured_text(found: FigurePrediction) -> str:
    """Each run's value at its rows: ``12 ms @ 3.0k · 0.31 s @ 100k``."""
    return " · ".join(f"{value_text(found, p.value)} @ {rows_text(p.rows)}" for p in found.points)


def error_text(found: FigurePrediction) -> str:
    """The value measured at the size predicted, the error, and whether it fell inside."""
    if found.measured is None or found.predicted is None:
        return ""
    inside = "inside" if found.predicted.contains(found.measured) else "**outside**"
    error = f"{found.error:+.0%}" if found.error is not None else "n/a"
    return f"{value_text(found, found.measured)} ({error}, {inside})"


def rows_text(rows: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rows >= scale:
            return f"{rows / scale:.1f}{unit}"
    return f"{rows:.0f}"


def size_text(step: StepPrediction) -> str:
    """``50.0M quiz_attempts, 4.0M videos (scaled)``"""
    return ", ".join(
        f"{rows_text(rows)} {table}" + (" (scaled)" if table in step.scaled else "")
        for table, rows in step.touched.items()
    )


def verdict_text(step: StepPrediction) -> str:
    """One line: the step, its size, its longest predicted downtime against its budget."""
    worst = step.worst
    if step.missing:
        return f"{step.migration}: not predicted ({step.missing})"
    if worst is None or worst.predicted is None or step.verdict is None:
        return f"{step.migration}: blocks nothing the app waits for"
    budget = f"its {elapsed(step.budget_ms / 1000)} budget ({step.budget_source})"
    judged = {"over": "over", "may exceed": "within, but its interval reaches past",
              "within": "within"}[step.verdict]  # fmt: skip
    return (
        f"{step.migration} at {size_text(step)}: {worst.label} for {predicted_text(worst)} "
        f"— {judged} {budget}"
    )


def write_prediction_report(prediction: SeriesPrediction, out_dir: Path) -> Path:
    """``report.md`` and one chart per step in ``out_dir`` (which exists and is writable)."""
    lines = [
        f"# Predicted at production size ({prediction.production})",
        "",
        "From " + ", ".join(f"`{run.folder.name}`" for run in prediction.runs) + ". "
        + _noise_text(prediction) + " Intervals are 95 %, for one run at that size.",
        "",
    ]  # fmt: skip
    verdicts = [verdict_text(s) for s in prediction.steps if s.verdict in ("over", "may exceed")]
    lines += [f"- **{v}**" for v in verdicts] or ["- every step stays within its stall budget"]
    against = any(f.measured is not None for s in prediction.steps for f in s.figures)
    for step in prediction.steps:
        lines += ["", f"## `{step.migration}`: {step.title}", ""]
        if step.missing:
            lines += [f"Not predicted: {step.missing}.", ""]
            continue
        lines += [f"At {size_text(step) or 'no table (it touches none)'}.", ""]
        header = "| figure | measured | model | predicted |"
        header += " measured there |" if against else ""
        lines += [header, "|---" * (5 if against else 4) + "|"]
        for found in step.figures:
            model = found.predicted.model if found.predicted else ""
            cells = [found.label, measured_text(found), model, predicted_text(found)]
            cells += [error_text(found)] if against else []
            lines.append("| " + " | ".join(cells) + " |")
        chart = growth_chart(step, out_dir / f"growth-{step.migration}.png")
        lines += ["", f"![{step.migration}: cost against rows touched]({chart.name})"]
    lines += ["", _method_text()]
    path = out_dir / REPORT
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _noise_text(prediction: SeriesPrediction) -> str:
    time, stall, size = (prediction.noise[f] for f in ("time", "stall", "bytes"))
    return (
        f"One measurement's error: ±{time.sigma:.0%} of a time (and {time.floor * 1000:.0f} ms), "
        f"±{stall.sigma:.0%} of a stall (and {stall.floor * 1000:.0f} ms), "
        f"±{size.sigma:.0%} of a size (and {human_bytes(size.floor)})."
    )


def _method_text() -> str:
    return (
        "Each figure is fitted against the rows of the tables the step took a lock on: "
        "constant when the sizes agree, else linear or n·log n (both when the points cannot "
        "tell them apart; the interval then spans both). Beyond the largest size measured "
        "the fit cannot see what changes there: a table that outgrows memory, a sort that "
        "spills to disk, another plan. See docs/measurement.md."
    )
