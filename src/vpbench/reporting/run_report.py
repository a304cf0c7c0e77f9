"""The report of one ``vpbench run``: which entries meet their targets, with a chart.

One run's percentiles are statistics of its own samples (their count and CV are shown);
whether a change made things faster is a question for two states measured together
(``vpbench ab``, ``vpbench steps``), which this report does not answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vpbench.reporting import charts
from vpbench.reporting.units import milliseconds

CHART = "latency.png"


def run_report(document: dict[str, Any], out: Path) -> str:
    """Markdown for one run document; draws its chart into ``out``."""
    entries = document["entries"]
    frame = pd.DataFrame(
        [
            {
                "name": e["name"],
                "p50_ms": (e.get("summary") or {}).get("p50_ms"),
                "p95_ms": (e.get("summary") or {}).get("p95_ms"),
                "target_ms": e.get("target_ms"),
            }
            for e in entries
        ],
        columns=["name", "p50_ms", "p95_ms", "target_ms"],
    )
    charts.run_latency_chart(frame, out / CHART)
    lines = [_headline(document), "", f"![latency per query and scenario]({CHART})", ""]
    lines += [
        "| entry | kind | runs | p50 ms | p95 ms | p99 ms | CV | server p50 ms | target | "
        "worst plan node |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    lines += [_row(e) for e in entries]
    metadata = document["metadata"]
    applied = metadata.get("applied_migrations") or []
    lines += [
        "",
        f"Measured on {metadata.get('server', '?')} "
        + (f"after `{applied[-1]}` ({len(applied)} migrations)" if applied else "(legacy schema)")
        + f", PostgreSQL {(metadata.get('postgres') or {}).get('version', '?')}. "
        "Percentiles of one run move between runs on a shared machine; compare two states "
        "with `vpbench ab` (paired, in one session).",
        "",
    ]
    return "\n".join(lines)


def _headline(document: dict[str, Any]) -> str:
    entries = document["entries"]
    label = document["metadata"].get("label") or "run"
    judged = [e for e in entries if e.get("meets_target") is not None]
    missed = [e for e in judged if not e["meets_target"]]
    failed = [e for e in entries if e.get("status") == "error"]
    text = f"**{label}:** " + (
        f"{len(judged) - len(missed)}/{len(judged)} targets met"
        if judged
        else "no entry has a target"
    )
    if missed:
        text += "; misses: " + ", ".join(
            f"`{e['name']}` p95 {milliseconds(e['summary']['p95_ms'])} "
            f"(target {milliseconds(e['target_ms'])})"
            for e in missed
        )
    if failed:
        text += "; **failed: " + ", ".join(f"`{e['name']}`" for e in failed) + "**"
    return text + "."


def _row(entry: dict[str, Any]) -> str:
    summary = entry.get("summary") or {}
    target = entry.get("target_ms")
    mark = {True: "✅", False: "❌", None: ""}[entry.get("meets_target")]
    worst = [s.get("worst_node") for s in (entry.get("plan_summaries") or {}).values() if s]
    node = max((w for w in worst if w), key=lambda w: w["exclusive_ms"], default=None)
    status = entry.get("status")
    cells = [
        f"`{entry['name']}`" + ("" if status == "ok" else f" **{status}**"),
        entry.get("kind", ""),
        str(summary.get("count", 0)),
        milliseconds(summary.get("p50_ms"), unit=False),
        milliseconds(summary.get("p95_ms"), unit=False),
        milliseconds(summary.get("p99_ms"), unit=False),
        f"{summary['cv']:.0%}" if summary.get("cv") is not None else "-",
        milliseconds(entry.get("server_p50_ms"), unit=False),
        f"{milliseconds(target)} {mark}" if target is not None else "",
        f"{node['node']} ({milliseconds(node['exclusive_ms'])})" if node else "",
    ]
    return "| " + " | ".join(cells) + " |"
