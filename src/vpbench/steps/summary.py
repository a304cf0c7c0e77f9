"""Documents and headline figures of a ``steps`` run: one per step, and the summary that
answers what each migration taught (biggest gain, its cost in memory and writes, what broke).

Every statistical figure here is a paired verdict with its interval (the two states were
measured pair by pair in one session); every cost is deterministic (bytes, WAL per row).
A step that changes nothing gives no verdict and no cost, and the answers say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vpbench.analysis.verdicts import Judgement
from vpbench.measure.availability import describe_availability
from vpbench.measure.runner import EntryResult
from vpbench.reporting.units import human_bytes, milliseconds, ratio_interval
from vpbench.results.documents import KIND_STEP, SCHEMA_VERSION
from vpbench.steps.indexes import index_gains
from vpbench.steps.model import StepReport
from vpbench.steps.phases import SeriesTime

KIND_SUMMARY = "steps-summary"
NO_CHANGE = "no change"


@dataclass(frozen=True)
class Headline:
    """One figure the summary follows across steps: a scenario, or the worst query (by
    p95) of a workload that has no scenario (each state's own worst)."""

    label: str
    entry_before: str
    entry_after: str
    before_p95_ms: float | None
    after_p95_ms: float | None
    target_ms: float | None
    judgement: Judgement | None
    """the paired verdict on after against before; None when the two are different entries"""

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "entry_before": self.entry_before,
            "entry_after": self.entry_after,
            "before_p95_ms": self.before_p95_ms,
            "after_p95_ms": self.after_p95_ms,
            "target_ms": self.target_ms,
            "judgement": self.judgement.to_dict() if self.judgement else None,
        }


def _p95(entry: EntryResult | None) -> float | None:
    latency = entry.latency if entry else None
    return latency.p95_ms if latency else None


def _worst(entries: Sequence[EntryResult]) -> EntryResult | None:
    return max(entries, key=lambda e: _p95(e) or 0.0) if entries else None


def headlines(step: StepReport) -> tuple[Headline, ...]:
    """Each scenario, and the worst query of each workload that has no scenario."""
    found: list[Headline] = []
    for workload in dict.fromkeys(e.workload for e in step.after):
        old = [e for e in step.before if e.workload == workload]
        new = [e for e in step.after if e.workload == workload]
        pairs: list[tuple[str, EntryResult | None, EntryResult | None]] = [
            (f"{e.name} p95", next((o for o in old if o.name == e.name), None), e)
            for e in new
            if e.kind == "scenario"
        ]
        if not pairs:
            pairs.append(
                (
                    f"{workload} worst p95",
                    _worst([e for e in old if e.kind == "query"]),
                    _worst([e for e in new if e.kind == "query"]),
                )
            )
        for label, before, after in pairs:
            if before is None or after is None:
                continue
            same = before.name == after.name
            found.append(
                Headline(
                    label,
                    before.name,
                    after.name,
                    _p95(before),
                    _p95(after),
                    after.target_ms,
                    step.verdicts.entries.get(after.name) if same else None,
                )
            )
    return tuple(found)


def _judged(step: StepReport, verdict: str) -> list[Headline]:
    return [h for h in headlines(step) if h.judgement and h.judgement.verdict == verdict]


def regressions(step: StepReport) -> list[str]:
    """Headline entries the paired session judged slower."""
    return [
        f"{h.label} {milliseconds(h.before_p95_ms)} -> {milliseconds(h.after_p95_ms)}, "
        f"paired {ratio_interval(h.judgement)}"
        for h in _judged(step, "slower")
        if h.judgement
    ]


def index_bytes_added(step: StepReport) -> int:
    return sum(c.added_bytes for c in step.costs if c.kind == "index")


def write_summary(step: StepReport) -> list[dict[str, Any]]:
    """Per table: WAL bytes per row on both states, their change, and the timed verdict."""
    rows = []
    for cost in step.writes:
        judgement = step.write_verdicts.get(cost.table)
        rows.append(
            {
                "table": cost.table,
                "wal_bytes_before": cost.before.wal_bytes if cost.before else None,
                "wal_bytes_after": cost.after.wal_bytes if cost.after else None,
                "wal_change": cost.wal_change,
                "changed": cost.changed,
                "timing": judgement.to_dict() if judgement else None,
                "error": cost.error,
            }
        )
    return rows


def step_document(step: StepReport, metadata: dict[str, Any]) -> dict[str, Any]:
    migration = step.migration
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND_STEP,
        "metadata": metadata,
        "migration": {
            "id": migration.id,
            "title": migration.title,
            "why": migration.why,
            "fixes": list(migration.fixes),
            "rewrites_table": migration.rewrites_table,
            "changes_results": list(migration.changes_results),
            "transactional": migration.transactional,
            "max_stall_ms": migration.max_stall_ms,
            "downtime": migration.downtime,
            "breaks_old_app": migration.breaks_old_app,
            "deploy_before": migration.deploy_before,
            "checksum": migration.checksum,
            "layout": migration.layout,
            "online": migration.online,
        },
        "backup_method": step.backup_method,
        "copies": [copy.to_dict() for copy in step.copies],
        "phases": step.phases,
        "peak_disk_bytes": step.peak_disk_bytes,
        "up_seconds": step.up_seconds,
        "up_wal_bytes": step.up_wal_bytes,
        "up_wal_scope": step.up_wal_scope,
        "touched": step.touched,
        "lock_retries": [retry.to_dict() for retry in step.lock_retries],
        "statements": [run.to_dict() for run in step.statements],
        "lock_holds": [hold.to_dict() for hold in step.lock_holds],
        "availability": step.availability.to_dict() if step.availability else None,
        "settled": {
            "before": step.settled_before.__dict__,
            "after": step.settled_after.__dict__,
        },
        "session": {
            "rounds": step.rounds,
            "seconds": step.measure_seconds,
            "threshold": str(step.threshold),
        },
        "checks": {
            "passed": step.passed,
            "reversible": step.reversible,
            "reversibility_problems": list(step.reversibility_problems),
            "data_intact": step.data_intact,
            "rows_before": step.rows_before,
            "rows_after": step.rows_after,
            "quarantined": step.quarantined,
            "equivalence": [
                e.__dict__ | {"compared_columns": list(e.compared_columns)}
                for e in step.equivalence
            ],
            "unexpected_changes": list(step.unexpected_changes),
            "old_app": step.old_app.to_dict(),
        },
        "indexes": [gain.to_dict() for gain in index_gains(step)],
        "audit_before": step.audit_before.to_dict(),
        "audit_after": step.audit_after.to_dict(),
        "costs": [
            c.__dict__ | {"added_bytes": c.added_bytes, "share_of_table": c.share_of_table}
            for c in step.costs
        ],
        "writes": [
            {
                "table": w.table,
                "before": w.before.__dict__ if w.before else None,
                "after": w.after.__dict__ if w.after else None,
                "before_ns": list(w.before_ns),
                "after_ns": list(w.after_ns),
                "rounds": list(w.rounds),
                "timing": timing.to_dict()
                if (timing := step.write_verdicts.get(w.table))
                else None,
                "error": w.error,
            }
            for w in step.writes
        ],
        "headlines": [h.to_dict() for h in headlines(step)],
        "verdicts": step.verdicts.to_dict(),
        "before": [e.to_document() for e in step.before],
        "after": [e.to_document() for e in step.after],
    }


def summary_document(
    steps: Sequence[StepReport], data: dict[str, Any], spent: SeriesTime | None = None
) -> dict[str, Any]:
    """The series' summary; ``data`` says where its data came from (a seeded profile and
    seed, or a copy of a team's database or dump)."""
    rows = [
        {
            "migration": step.migration.id,
            "title": step.migration.title,
            "passed": step.passed,
            "headlines": [h.to_dict() for h in headlines(step)],
            "audit_violations": [
                step.audit_before.total_violations,
                step.audit_after.total_violations,
            ],
            "index_bytes_added": index_bytes_added(step),
            "writes": write_summary(step),
            "reversible": step.reversible,
            "data_intact": step.data_intact,
            "unexpected_changes": list(step.unexpected_changes),
            "regressions": regressions(step),
            "deploy_order": step.old_app.deploy_order,
            "deploy_before": step.old_app.deploy_before,
            "phases": step.phases,
            "peak_disk_bytes": step.peak_disk_bytes,
            "old_app_undeclared": step.old_app.undeclared,
            "document": step.path.name if step.path else None,
        }
        for step in steps
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND_SUMMARY,
        "profile": data.get("profile", "copy"),
        "seed": data.get("seed"),
        "data": data,
        "seconds": spent.seconds if spent else None,
        "time": spent.to_dict() if spent else None,
        "steps": rows,
        "answers": answers(steps),
    }


def answers(steps: Sequence[StepReport]) -> dict[str, str]:
    """Plain-language answers to "what did each migration teach us"; "no change" where
    no step gave a verdict or a cost."""
    if not steps:
        return {}
    return {
        "biggest_gain": _biggest_gain(steps),
        "memory_cost": _memory_cost(steps),
        "write_cost": _write_cost(steps),
        "what_broke": "; ".join(
            f"{s.migration.id}: "
            + ", ".join(
                (["not reversible"] if not s.reversible else [])
                + (["rows lost"] if not s.data_intact else [])
                + [f"unexpected result change in {c}" for c in s.unexpected_changes]
                + (
                    [f"stalls the app: {describe_availability(s.availability)}"]
                    if s.availability and not s.availability.passed
                    else []
                )
            )
            for s in steps
            if not s.passed
        )
        or "nothing: every step was reversible, lost no row, changed no result unexpectedly "
        "and blocked the app's requests no longer than its budget",
        "downtime": "; ".join(
            f"{s.migration.id}: may stall the app {s.migration.max_stall_ms / 1000:g} s"
            + (f" (blocked {_longest_block_s(s):.1f} s under load)" if s.availability else "")
            for s in steps
            if s.migration.max_stall_ms is not None
        )
        or "none declared: no step may block the app's requests beyond the run's budget",
        "regressions": "; ".join(
            f"{s.migration.id}: {', '.join(regressions(s))}" for s in steps if regressions(s)
        )
        or f"none (no headline judged slower by {steps[0].threshold} in the paired sessions)",
    }


def _longest_block_s(step: StepReport) -> float:
    assert step.availability is not None
    return max(step.availability.blocked_ms.values(), default=0.0) / 1000


def _biggest_gain(steps: Sequence[StepReport]) -> str:
    gains = [(h, s) for s in steps for h in _judged(s, "faster") if h.judgement]
    if not gains:
        return f"{NO_CHANGE}: no step made a headline measurably faster"
    headline, step = min(gains, key=lambda g: _ratio(g[0]))
    assert headline.judgement is not None
    estimate = headline.judgement.estimate
    return (
        f"{step.migration.id}: {headline.label} {1 / estimate.ratio:.1f}x faster "
        f"(paired ratio {ratio_interval(headline.judgement)}; p95 "
        f"{milliseconds(headline.before_p95_ms)} -> {milliseconds(headline.after_p95_ms)})"
    )


def _ratio(headline: Headline) -> float:
    return headline.judgement.estimate.ratio if headline.judgement else 1.0


def _memory_cost(steps: Sequence[StepReport]) -> str:
    costly = max(steps, key=index_bytes_added)
    added = index_bytes_added(costly)
    if added <= 0:
        return f"{NO_CHANGE}: no step added index space"
    return f"{costly.migration.id} added {human_bytes(added)} of indexes (the most of any step)"


def _write_cost(steps: Sequence[StepReport]) -> str:
    """The largest deterministic increase of WAL per inserted row, and every insert the
    paired timings judged slower."""
    worst = max(
        ((w.wal_change, s, w) for s in steps for w in s.writes if (w.wal_change or 0) > 0),
        key=lambda item: item[0] or 0.0,
        default=None,
    )
    slower = [
        (s, w) for s in steps for w in s.writes
        if (j := s.write_verdicts.get(w.table)) is not None and j.verdict == "slower"
    ]  # fmt: skip
    if worst is None and not slower:
        return f"{NO_CHANGE}: no step made an insert write more WAL or take longer"
    parts = []
    if worst is not None:
        change, step, cost = worst
        assert cost.before and cost.after and change is not None
        timing = step.write_verdicts.get(cost.table)
        parts.append(
            f"{step.migration.id}: {cost.table} inserts write {change:+.0%} WAL "
            f"({human_bytes(cost.before.wal_bytes)} -> {human_bytes(cost.after.wal_bytes)} "
            "per row); insert time "
            + (f"{timing.verdict} ({ratio_interval(timing)})" if timing else "not timed")
        )
    parts += [
        f"{s.migration.id}: {w.table} inserts slower ({ratio_interval(s.write_verdicts[w.table])})"
        for s, w in slower
        if worst is None or (s, w) != worst[1:]
    ]
    return "; ".join(parts)
