"""Rich tables for the CLI: seeding, audit and run results."""

from __future__ import annotations

from rich.table import Table

from vpbench.audit import AuditReport
from vpbench.run import RunOutcome
from vpbench.seed import SeedResult

AUDIT_EXAMPLES_SHOWN = 3


def milliseconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def seed_table(result: SeedResult) -> Table:
    dirt = ", ".join(f"{knob} {count:,}" for knob, count in result.dirty_counts.items())
    table = Table(
        title=f"seeded {result.database}: profile {result.profile}, seed {result.seed}",
        caption=f"dirty rows: {dirt}",
    )
    for column in ("table", "rows", "seconds", "rows/s"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for load in result.tables:
        table.add_row(
            load.table, f"{load.rows:,}", f"{load.seconds:.2f}", f"{load.rows_per_second:,.0f}"
        )
    table.add_row(
        "total",
        f"{result.rows:,}",
        f"{result.seconds:.2f}",
        f"{result.rows / result.seconds:,.0f}",
        style="bold",
    )
    return table


def audit_table(report: AuditReport, where: str) -> Table:
    table = Table(
        title=f"integrity audit of {where}",
        caption=f"total violations: {report.total_violations:,}",
    )
    table.add_column("check", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("examples", overflow="fold", min_width=36)
    for check in report.checks:
        if not check.applicable:
            table.add_row(check.name, "n/a", f"[dim]{check.note}[/]")
            continue
        lines = list(check.examples[:AUDIT_EXAMPLES_SHOWN])
        if check.violations > len(lines) and lines:
            lines.append("…")
        if check.note:
            lines.append(f"[dim]{check.note}[/]")
        style = "red" if check.violations else "green"
        table.add_row(check.name, f"[{style}]{check.violations:,}[/]", "\n".join(lines))
    return table


def run_table(outcome: RunOutcome) -> Table:
    """Query, p50/p95/p99, CV, server p50, target, verdict, worst plan node (and tx/s with
    several clients)."""
    concurrent = any(e.clients > 1 for e in outcome.entries)
    table = Table(title=f"results: {outcome.path}")
    table.add_column("entry")
    for column in ("p50 ms", "p95 ms", "p99 ms", "CV", "server p50", "target"):
        table.add_column(column, justify="right")
    if concurrent:
        table.add_column("tx/s", justify="right")
    table.add_column("")
    table.add_column("worst plan node")
    for entry in outcome.entries:
        latency = entry.latency
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: ""}[entry.meets_target]
        if entry.status != "ok":
            verdict = f"[red]{entry.status}[/]"
        worst = [s.worst_node for s in entry.plan_summaries.values() if s.worst_node]
        worst_node = max(worst, key=lambda w: w.exclusive_ms) if worst else None
        cells = [
            entry.name,
            milliseconds(latency.p50_ms if latency else None),
            milliseconds(latency.p95_ms if latency else None),
            milliseconds(latency.p99_ms if latency else None),
            f"{latency.cv:.0%}" if latency else "",
            milliseconds(entry.server_p50_ms),
            milliseconds(entry.target_ms),
        ]
        if concurrent:
            cells.append(f"{entry.throughput_per_s:,.0f}" if entry.throughput_per_s else "")
        cells += [
            verdict,
            f"{worst_node.node} ({worst_node.exclusive_ms:.1f} ms)" if worst_node else "",
        ]
        table.add_row(*cells)
    return table
