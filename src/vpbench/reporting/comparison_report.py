"""The before/after report of a comparison (two runs, an ``ab`` session or one step's
copies): a table per query with its paired verdict, and charts beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vpbench.analysis.comparison import Comparison
from vpbench.reporting import charts
from vpbench.reporting.units import detectable, ratio, short_ms


def comparison_table(comparison: Comparison) -> list[str]:
    """Per query: p50 and p95 before → after, the paired ratio and verdict, plan, buffers
    and target."""
    lines = [
        "| query | p50 before → after (ms) | p95 before → after (ms) | ratio [95% CI] | "
        "verdict | sees | plan changed | buffers | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison.rows:
        estimate = row.judgement.estimate
        target = ""
        if row.target_ms is not None:
            mark = {True: "✅", False: "❌", None: ""}
            met = f"{mark[row.target_met_base]}→{mark[row.target_met_new]}"
            target = f"{short_ms(row.target_ms)} ms {met}"
        verdict: str = row.judgement.verdict
        if verdict in ("slower", "faster"):
            verdict = f"**{verdict}**"
        lines.append(
            f"| `{row.name}` | {short_ms(row.base_p50_ms)} → {short_ms(row.new_p50_ms)} | "
            f"{short_ms(row.base_p95_ms)} → {short_ms(row.new_p95_ms)} | {ratio(estimate.ratio)} "
            f"[{ratio(estimate.low)}, {ratio(estimate.high)}] | {verdict} | "
            f"{detectable(row.judgement)} | "
            f"{'yes' if row.plan_changed else 'no' if row.plan_changed is False else '-'} | "
            f"{short_ms(row.base_buffers)} → {short_ms(row.new_buffers)} | {target} |"
        )
    return lines


def comparison_markdown(comparison: Comparison, out: Path) -> str:
    """The report's text, its charts and ``comparison.json`` written into ``out``."""
    rows = pd.DataFrame([r.to_dict() for r in comparison.rows])
    charts.before_after_chart(rows, out / "before-after.png")
    samples = pd.DataFrame(
        [
            {"name": name, "run": side.label, "latency_ms": ns / 1e6}
            for side in (comparison.base, comparison.new)
            for name, entry in side.entries.items()
            if name in set(rows["name"])
            for ns in entry.samples_ns
        ]
    )
    charts.distribution_chart(samples, out / "distribution.png")
    with_target = [r for r in comparison.rows if r.target_ms is not None]
    met = sum(r.target_met_new is True for r in with_target)
    faster = [r for r in comparison.rows if r.judgement.verdict == "faster"]
    best = min(faster, key=lambda r: r.judgement.estimate.ratio, default=None)
    regressions = comparison.regressions()
    headline = (
        f"**{comparison.new.label} vs {comparison.base.label}:** {met}/{len(with_target)} "
        "targets met"
        + (
            f"; biggest win `{best.name}` {1 / best.judgement.estimate.ratio:.1f}x faster"
            if best
            else "; no significant speed-up"
        )
        + (
            f"; **regressions: {', '.join(f'`{r.name}`' for r in regressions)}**"
            if regressions
            else "; no regression"
        )
        + (
            " (measured in one interleaved session)"
            if comparison.paired_session
            else " (runs collected apart: timing-only changes are inconclusive)"
        )
        + "."
    )
    lines = [headline, "", *comparison_table(comparison)]
    lines += [
        "",
        f"Verdicts need the whole 95% interval beyond {comparison.threshold} and p < "
        f"{comparison.alpha}; *sees*: the smallest change this comparison could have "
        "detected (80% power)."
        + (f" Between the runs: {comparison.confounder}." if comparison.confounder else "")
        + (f" {comparison.drift.note}." if comparison.drift else ""),
        "",
    ]
    lines += [
        "![before / after per query](before-after.png)",
        "",
        "![latency distributions](distribution.png)",
        "",
    ]
    (out / "comparison.json").write_text(json.dumps(comparison.to_dict(), indent=1, default=str))
    return "\n".join(lines)
