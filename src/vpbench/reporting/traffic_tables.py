"""The sections of a steps report about the deployed app: each step's requests while it ran
under live traffic (a timeline chart and the table of blocked, slowed and failed requests),
and the old app on the new schema with the deploy order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vpbench.measure.availability import refused_by_constraint
from vpbench.reporting import charts
from vpbench.reporting.units import duration, milliseconds


def timeline_chart(document: dict[str, Any], out: Path) -> list[str]:
    """The step's requests over time while ``up`` ran under traffic, as a chart."""
    found = document.get("availability")
    if not found or not found.get("timeline"):
        return []

    requests = pd.DataFrame(
        found["timeline"], columns=["kind", "start_s", "ms", "outcome", "blocked_ms"]
    )
    statements = pd.DataFrame(
        found.get("statements") or [], columns=["line", "text", "started_s", "seconds"]
    )
    name = f"timeline-{document['migration']['id']}.png"
    charts.traffic_timeline_chart(
        requests, statements, out / name, budget_ms=found["budget_ms"],
        title=f"{document['migration']['id']} under live traffic",
    )  # fmt: skip
    return [f"![the app's requests while {document['migration']['id']} ran]({name})", ""]


def _failed_cell(failed: dict[str, int]) -> str:
    """Failed requests, and in brackets those a new constraint refused."""
    refused = sum(n for key, n in failed.items() if refused_by_constraint(key))
    others = sum(failed.values()) - refused
    return f"{others:,} ({refused:,} refused)" if refused else f"{others:,}"


def _blocked_cell(found: dict[str, Any], kind: str) -> str:
    """The longest lock wait of one kind on the migration, with its resolution."""
    blocked = found["blocked"][kind]
    if blocked is None:
        return "n/a" if found.get("stall_ms") else "0 s"
    half = (blocked["high_ms"] - blocked["low_ms"]) / 2
    return f"{blocked['ms'] / 1000:.2f} s ±{milliseconds(half)}"


def _slowed_cell(slowed: dict[str, Any] | None) -> str:
    """p99 under load against at rest, relative to each query's at-rest median."""
    if not slowed or slowed.get("ratio") is None:
        return "n/a"
    text = f"{slowed['ratio']:.2f}x"
    if slowed.get("low") is not None:
        text += f" [{slowed['low']:.2f}, {slowed['high']:.2f}]"
    if slowed.get("slowest"):
        text += (
            f"<br>slowest: {slowed['slowest']} {duration(slowed['slowest_ms'])} "
            f"(p99 at rest {duration(slowed['slowest_at_rest_p99_ms'])})"
        )
    return text


def availability_table(steps: list[dict[str, Any]]) -> list[str]:
    """Per step rehearsed under live traffic: the longest lock waits on the migration against
    its budget, how much the app slowed without one, failed requests, and what the worst
    wait waited for."""
    rehearsed = [d for d in steps if d.get("availability")]
    if not rehearsed:
        return []
    lines = ["", "### Under live traffic", ""]
    lines += [
        "| step | reads blocked | writes blocked | budget | reads slowed (p99) "
        "| writes slowed (p99) | failed requests | longest wait |"
    ]
    lines += ["|---|---:|---:|---:|---|---|---:|---|"]
    legacy = False
    for document in rehearsed:
        found = document["availability"]
        worst = max(
            (b for b in found["blocked"].values() if b), key=lambda b: b["ms"], default=None
        )
        cause = ""
        if worst and worst.get("waited_for"):
            cause = f"{worst['kind']} {worst['name']} waited for {worst['waited_for']}"
            if worst.get("migration_waits"):  # a lock queue: the migration waited too
                cause += f" behind the migration's queued {worst['migration_waits']}"
            elif worst.get("migration_holds"):
                cause += f" (held: {worst['migration_holds']})"
            if worst.get("statement"):
                cause += f" during `{worst['statement']}`"
        if found.get("stall_ms"):  # a schema 2 document: stalls not told apart
            legacy = True
            cause = "stalled " + ", ".join(
                f"{kind}s {ms / 1000:.2f} s" for kind, ms in found["stall_ms"].items()
            )
        budget = f"{found['budget_ms'] / 1000:g} s" + ("" if found["passed"] else " **over**")
        lines.append(
            f"| `{document['migration']['id']}` | {_blocked_cell(found, 'read')} | "
            f"{_blocked_cell(found, 'write')} | {budget} | "
            f"{_slowed_cell(found['slowed'].get('read'))} | "
            f"{_slowed_cell(found['slowed'].get('write'))} | {_failed_cell(found['failed'])} | "
            f"{cause} |"
        )
    lines += [
        "",
        "Each step's `up` rehearsed on a copy of the state before it while reader sessions ran "
        "the workload and a writer inserted and updated rows like the app. *Failed*: requests "
        "that failed; in brackets, writes a new constraint refused (SQLSTATE class 23: the "
        "writer replays rows the step now forbids), not counted against the step. "
        "*Blocked*: the longest time a request "
        "waited for a lock the migration was in the way of (± half a sampling period); this is "
        "what the stall budget judges. *Slowed*: the p99 of the other requests' latencies "
        "(each relative to its query's at-rest median) under load against at rest, with its 95% "
        "interval: CPU and disk shared with the migration, reported and not judged.",
    ]
    if legacy:
        lines += [
            "",
            "*n/a*: a document written before lock waits and contention were told apart; its "
            "stall (latency beyond the at-rest p99 of its kind, for whatever reason) is shown "
            "instead.",
        ]
    declared = [d["migration"] for d in rehearsed if d["migration"].get("downtime")]
    if declared:
        lines += [
            "",
            "Downtime the steps declare (`max_stall` and `downtime` in `migration.toml`):",
            "",
        ]
        lines += [
            f"- `{m['id']}` ({m['max_stall_ms'] / 1000:g} s): {m['downtime'].strip()}"
            for m in declared
        ]
    return lines


def _deploy_advice(found: dict[str, Any]) -> str:
    """The deploy order, with the later step the new queries must be deployed before."""
    later = found.get("deploy_before")
    return str(found.get("deploy_order", "")) + (f", before `{later}`" if later else "")


def deploy_cell(row: dict[str, Any]) -> str:
    """The series table's deploy order of one step, flagged when its breakage is undeclared."""
    order = _deploy_advice(row)
    if row.get("old_app_undeclared"):
        return f"**{order}, undeclared**"
    return order


def old_app_table(steps: list[dict[str, Any]]) -> list[str]:
    """Per step: the deploy order its old-app check found, and what of the old app breaks."""
    checked = [(d["migration"], d["checks"]["old_app"]) for d in steps if "old_app" in d["checks"]]
    if not checked:
        return []
    lines = ["", "### The old app on the new schema", ""]
    lines += ["| step | deploy order | what of the old app breaks | new SQL on the old schema |"]
    lines += ["|---|---|---|---|"]
    for migration, found in checked:
        breaks = "<br>".join(f"`{b}`" for b in found["old_app_breaks"]) or "nothing"
        if found["old_app_breaks"]:
            declared = found["declared"]
            breaks += f"<br>declared: {declared}" if declared else "<br>**not declared**"
        if found.get("refused_under_load"):
            refused = ", ".join(found["refused_under_load"])
            breaks += f"<br>refused by the new constraints under load: {refused}"
        needs = "<br>".join(f"`{n}`" for n in found["new_needs_new_schema"]) or "works"
        lines.append(f"| `{migration['id']}` | {_deploy_advice(found)} | {breaks} | {needs} |")
    lines += [
        "",
        "The SQL of the app deployed before each step (its variants in force then) and its "
        "INSERTs, run against the state after it and compared with the new SQL there; and the "
        "new SQL run against the state before it. A step that breaks the old app must say why "
        'in `migration.toml` (`breaks_old_app`), or its checks fail. "Before" a later step: '
        "that step removes what the app deployed before this one still uses "
        "(`deploy_before`).",
    ]
    return lines
