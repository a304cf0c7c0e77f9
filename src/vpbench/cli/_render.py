"""Rich tables for the CLI: seeding, audit and run results."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from vpbench.dataset.audit_result import AuditReport
from vpbench.dataset.seed import SeedResult
from vpbench.measure.run import RunOutcome
from vpbench.measure.writecost import WriteCost
from vpbench.migrations.apply import MigrationState, StepApplied
from vpbench.reporting.units import detectable, human_bytes, ratio_interval
from vpbench.steps.model import StepReport, StepsResult
from vpbench.steps.summary import Headline, headlines, index_bytes_added

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
        caption=f"rows violating a data check: {report.total_violations:,}; schema findings "
        f"(generic checks): {report.schema_findings:,}",
    )
    table.add_column("check", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("examples", overflow="fold", min_width=36)
    for check in report.checks:
        if not check.applicable:
            table.add_row(check.name, check.group, "n/a", f"[dim]{check.note}[/]")
            continue
        lines = list(check.examples[:AUDIT_EXAMPLES_SHOWN])
        if check.violations > len(lines) and lines:
            lines.append("…")
        if check.note:
            lines.append(f"[dim]{check.note}[/]")
        style = "red" if check.violations else "green"
        table.add_row(check.name, check.group, f"[{style}]{check.violations:,}[/]",
                      "\n".join(lines))  # fmt: skip
    if report.rows:
        counted = ", ".join(f"{name} {rows:,}" for name, rows in report.rows.items())
        table.caption = f"{table.caption}\nrows: {counted}"
    return table


def run_table(outcome: RunOutcome) -> Table:
    """Query, p50/p95/p99, CV, server p50, target, verdict, worst plan node (and tx/s with
    several clients)."""
    concurrent = any(e.clients > 1 for e in outcome.entries)
    stopped = any(e.budget_stopped for e in outcome.entries)
    table = Table(
        title=f"results: {outcome.path}",
        caption="n: timed executions; *: stopped on the --max-time budget (p95 and p99 of "
        "fewer than 20 and 100 samples are their largest)"
        if stopped
        else "n: timed executions",
    )
    table.add_column("entry")
    table.add_column("n", justify="right")
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
            escape(entry.name),  # an app-layer version is "name[app]", not markup
            f"{len(entry.samples_ns)}{'*' if entry.budget_stopped else ''}",
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


def migration_table(states: Sequence[MigrationState], where: str) -> Table:
    table = Table(title=f"migrations of {where}")
    for column in ("migration", "applied", "title"):
        table.add_column(column)
    for state in states:
        when = f"{state.applied_at:%Y-%m-%d %H:%M}" if state.applied_at else "[dim]pending[/]"
        table.add_row(state.migration.id, when, state.migration.title)
    return table


def _arrow(before: float | None, after: float | None) -> str:
    return f"{milliseconds(before)} → {milliseconds(after)}"


VERDICT_STYLE = {"faster": "green", "slower": "red", "unchanged": "", "inconclusive": "yellow"}


def _verdict(verdict: str) -> str:
    style = VERDICT_STYLE.get(verdict, "")
    return f"[{style}]{verdict}[/]" if style else verdict


def _headline_cell(headline: Headline) -> str:
    lines = [f"{_arrow(headline.before_p95_ms, headline.after_p95_ms)} ms"]
    if headline.judgement is not None:
        judgement = headline.judgement
        lines.append(
            f"{ratio_interval(judgement)} {_verdict(judgement.verdict)} "
            f"[dim](sees {detectable(judgement)})[/]"
        )
    return "\n".join(lines)


def _write_cell(cost: WriteCost) -> str:
    if cost.error or cost.before is None or cost.after is None:
        return f"{cost.table}: [yellow]{cost.error or 'not measured'}[/]"
    wal = f"{human_bytes(cost.before.wal_bytes)} → {human_bytes(cost.after.wal_bytes)}"
    line = f"{cost.table}: WAL {wal}/row"
    if cost.before.indexes != cost.after.indexes:
        line += f", {cost.before.indexes} → {cost.after.indexes} indexes"
    return line


def lock_retries(applied: StepApplied) -> str:
    """``, 3 lock-timeout retries`` (empty without any): how often the step waited out a
    conflicting lock before it went through."""
    count = len(applied.lock_retries)
    if not count:
        return ""
    return f", {count} lock-timeout retr{'y' if count == 1 else 'ies'}"


def _under_load_cell(step: StepReport) -> str:
    """The longest lock waits of reads and writes on the migration against the step's
    budget, and how much the app slowed down without one (reported, not judged)."""
    found = step.availability
    if found is None:
        return "not rehearsed"
    blocked = found.blocked_ms
    colour = "green" if found.passed else "red"
    slowed = "\n".join(f"slowed {found.slowed[kind].describe()}" for kind in ("read", "write"))
    return (
        f"blocked reads {blocked['read'] / 1000:.2f} s\nblocked writes "
        f"{blocked['write'] / 1000:.2f} s\n[{colour}]budget {found.budget_ms / 1000:g} s[/]\n"
        f"[dim]{slowed}[/]"
    )


def _old_app_cell(step: StepReport) -> str:
    """The deploy order the old-app check found; red when the break is undeclared."""
    order = step.old_app.deploy_advice
    if step.old_app.undeclared:
        return f"[red]{order}\n(undeclared)[/]"
    return order if not step.old_app.old_app_breaks else f"[yellow]{order}[/]"


def steps_table(result: StepsResult) -> Table:
    """Per step: headline p95s before → after with the paired ratio, its interval, verdict
    and detectable change; audit; index bytes; what an insert costs; checks."""
    table = Table(
        title=f"steps ({len(result.steps)} migrations)",
        caption="ratio [95% CI]: median of paired after/before ratios, interval over rounds; "
        "a verdict needs the ratio beyond the threshold, significant, with a precise interval "
        "excluding 1 or one wholly beyond; sees ±x%: the smallest "
        "change the step could have detected (80% power)",
    )
    labels = list(dict.fromkeys(h.label for s in result.steps for h in headlines(s)))
    longest = max((len(s.migration.id) for s in result.steps), default=4)
    table.add_column("step", min_width=min(longest, 30), overflow="fold")
    for label in labels:
        table.add_column(label, justify="right")
    for column in ("violations", "index size", "inserts", "under load"):
        table.add_column(column, justify="right")
    table.add_column("old app", justify="right", overflow="fold")  # a step id in full
    for column in ("reversible", "checks"):
        table.add_column(column, justify="right")
    for step in result.steps:
        found = {h.label: h for h in headlines(step)}
        cells = [step.migration.id]
        cells += [_headline_cell(found[label]) if label in found else "" for label in labels]
        inserts = []
        for cost in step.writes:
            inserts.append(_write_cell(cost))
            if (timing := step.write_verdicts.get(cost.table)) is not None:
                inserts.append(f"  insert {ratio_interval(timing)} {_verdict(timing.verdict)}")
        cells += [
            f"{step.audit_before.total_violations:,} → {step.audit_after.total_violations:,}",
            human_bytes(index_bytes_added(step), signed=True),
            "\n".join(inserts),
            _under_load_cell(step),
            _old_app_cell(step),
            "[green]yes[/]" if step.reversible else "[red]no[/]",
            "[green]pass[/]" if step.passed else "[red]FAIL[/]",
        ]
        table.add_row(*cells)
    return table


def time_table(result: StepsResult) -> Table:
    """Where the series' wall time went, phase by phase, and the harness's own share."""
    spent = result.time
    caption = (
        "harness's share (all but the migrations' up and down and the paired rounds): "
        f"{spent.harness_share:.0%}"
    )
    if spent.peak_disk_bytes is not None:
        caption += f"; peak extra disk of a step: {human_bytes(spent.peak_disk_bytes)}"
    table = Table(title="where the time went", caption=caption)
    for column in ("phase", "seconds", "share"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for row in spent.phases:
        table.add_row(row.phase, f"{row.seconds:.1f}", f"{row.share:.0%}")
    table.add_row("[b]total[/]", f"[b]{spent.seconds:.1f}[/]", "100%")
    return table
