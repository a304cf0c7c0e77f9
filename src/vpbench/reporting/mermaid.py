"""Charts GitHub draws itself: Mermaid ``xychart-beta`` and ``gantt`` blocks for a
pull-request comment.

A comment cannot show the PNGs a run wrote (they would need hosting); Mermaid needs none
and renders in comments, also on pull requests from forks, whose tokens cannot push images.
"""

from __future__ import annotations

import json
import math

from vpbench.analysis.comparison import Comparison, EntryComparison

LABEL_LIMIT = 24
GANTT_LABEL_LIMIT = 60


def comparison_charts(comparison: Comparison) -> str:
    """Two charts: p95 per entry (base as bars, new as a line) and the paired ratio of
    medians per entry with the no-change line at 1."""
    rows = [r for r in comparison.rows if _finite(r.base_p95_ms) and _finite(r.new_p95_ms)]
    if not rows:
        return ""
    names = [_label(r.name) for r in rows]
    base = [float(r.base_p95_ms or 0) for r in rows]
    new = [float(r.new_p95_ms or 0) for r in rows]
    ratios = [_ratio(r) for r in rows]
    top = max([*ratios, 1.0]) * 1.1
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "p95 per query (ms): {_text(comparison.base.label)} bars, '
            f'{_text(comparison.new.label)} line"',
            f"    x-axis {json.dumps(names)}",
            '    y-axis "p95 (ms)"',
            f"    bar {_numbers(base)}",
            f"    line {_numbers(new)}",
            "```",
            "",
            "```mermaid",
            "xychart-beta",
            f'    title "{_text(comparison.new.label)} / {_text(comparison.base.label)}, '
            'ratio of medians (line: 1 = no change)"',
            f"    x-axis {json.dumps(names)}",
            f'    y-axis "ratio" 0 --> {_number(top)}',
            f"    bar {_numbers(ratios)}",
            f"    line {_numbers([1.0] * len(rows))}",
            "```",
        ]
    )


Bar = tuple[str, float, float]
"""a timeline bar: its label, and when it started and ended, in seconds from the start"""


def timeline_chart(title: str, sections: dict[str, list[Bar]]) -> str:
    """A Gantt chart of bars in named sections (a migration's statements, the locks it
    held), on an axis of minutes and seconds from its start."""
    lines = ["```mermaid", "gantt", f"    title {_gantt_text(title)}", "    dateFormat x",
             "    axisFormat %M:%S"]  # fmt: skip
    for section, bars in sections.items():
        if not bars:
            continue
        lines.append(f"    section {_gantt_text(section)}")
        for label, start, end in bars:
            # epoch milliseconds; a bar shorter than a millisecond is drawn one long
            begin = round(start * 1000)
            lines.append(f"    {_gantt_text(label)} : {begin}, {max(round(end * 1000), begin + 1)}")
    return "\n".join([*lines, "```"])


def _gantt_text(value: str) -> str:
    """Text for a Gantt title, section or task (``:`` and ``#`` start its syntax)."""
    text = value.replace(":", " ").replace("#", " ").replace(";", " ").strip()
    return text if len(text) <= GANTT_LABEL_LIMIT else text[: GANTT_LABEL_LIMIT - 1] + "…"


def _ratio(row: EntryComparison) -> float:
    value = row.judgement.estimate.ratio
    return value if _finite(value) else 1.0


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _number(value: float) -> str:
    """Plain decimal notation (Mermaid reads no exponent), three decimals at most."""
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _label(name: str) -> str:
    return name if len(name) <= LABEL_LIMIT else name[: LABEL_LIMIT - 1] + "…"


def _text(value: str) -> str:
    """Text inside a Mermaid double-quoted string (which has no escapes)."""
    return value.replace('"', "'")
