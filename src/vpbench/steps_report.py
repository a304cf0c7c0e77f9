"""Documents and headline figures of a ``steps`` run: one per step, and the summary that
answers what each migration taught (biggest gain, its cost in memory and writes, what broke).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vpbench.compare import Threshold, judge_pairs
from vpbench.measure import EntryResult
from vpbench.results import KIND_STEP, SCHEMA_VERSION, entry_document

if TYPE_CHECKING:
    from vpbench.steps import StepReport

KIND_SUMMARY = "steps-summary"


@dataclass(frozen=True)
class Headline:
    """One figure the summary follows across steps: a scenario's p95, or the worst p95
    among a workload's queries (each state's own worst)."""

    label: str
    entry_before: str
    entry_after: str
    before_p95_ms: float | None
    after_p95_ms: float | None
    target_ms: float | None

    @property
    def speedup(self) -> float | None:
        """p95 before / p95 after (2.0 = twice as fast)."""
        if self.before_p95_ms and self.after_p95_ms:
            return self.before_p95_ms / self.after_p95_ms
        return None


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
        scenarios = [e for e in new if e.kind == "scenario"]
        for scenario in scenarios:
            before = next((e for e in old if e.name == scenario.name), None)
            found.append(
                Headline(
                    f"{scenario.name} p95",
                    scenario.name,
                    scenario.name,
                    _p95(before),
                    _p95(scenario),
                    scenario.target_ms,
                )
            )
        if not scenarios:
            worst_old = _worst([e for e in old if e.kind == "query"])
            worst_new = _worst([e for e in new if e.kind == "query"])
            if worst_old and worst_new:
                found.append(
                    Headline(
                        f"{workload} worst p95",
                        worst_old.name,
                        worst_new.name,
                        _p95(worst_old),
                        _p95(worst_new),
                        worst_new.target_ms,
                    )
                )
    return tuple(found)


REGRESSION = Threshold("median", 0.10)
"""A headline entry judged "slower" (paired session) by at least this much is a regression."""


def regressions(step: StepReport) -> list[str]:
    """Headline entries the paired before/after measurement judges slower."""
    before = {e.name: e for e in step.before}
    after = {e.name: e for e in step.after}
    found = []
    for h in headlines(step):
        old, new = before.get(h.entry_before), after.get(h.entry_after)
        if old is None or new is None or h.entry_before != h.entry_after:
            continue
        judgement = judge_pairs(
            np.asarray(old.samples_ns) / 1e6,
            np.asarray(new.samples_ns) / 1e6,
            block=step.round_size,
            threshold=REGRESSION,
            resamples=1000,
        )
        if judgement.verdict == "slower":
            found.append(f"{h.label} {h.before_p95_ms:.1f} -> {h.after_p95_ms:.1f} ms")
    return found


def index_bytes_added(step: StepReport) -> int:
    return sum(c.added_bytes for c in step.costs if c.kind == "index")


def write_change(step: StepReport) -> dict[str, float | None]:
    """Relative change of insert throughput per table (-0.2 = 20% slower writes)."""
    changes: dict[str, float | None] = {}
    for table, old in step.writes_before.items():
        new = step.writes_after.get(table)
        changes[table] = new / old - 1 if old and new else None
    return changes


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
            "checksum": migration.checksum,
        },
        "backup_method": step.backup_method,
        "up_seconds": step.up_seconds,
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
        },
        "audit_before": step.audit_before.to_dict(),
        "audit_after": step.audit_after.to_dict(),
        "costs": [
            c.__dict__ | {"added_bytes": c.added_bytes, "share_of_table": c.share_of_table}
            for c in step.costs
        ],
        "writes_rows_per_s": {"before": step.writes_before, "after": step.writes_after},
        "headlines": [h.__dict__ | {"speedup": h.speedup} for h in headlines(step)],
        "before": [entry_document(e) for e in step.before],
        "after": [entry_document(e) for e in step.after],
    }


def summary_document(steps: Sequence[StepReport], profile: str, seed: int) -> dict[str, Any]:
    rows = []
    for step in steps:
        rows.append(
            {
                "migration": step.migration.id,
                "title": step.migration.title,
                "passed": step.passed,
                "headlines": [h.__dict__ | {"speedup": h.speedup} for h in headlines(step)],
                "audit_violations": [
                    step.audit_before.total_violations,
                    step.audit_after.total_violations,
                ],
                "index_bytes_added": index_bytes_added(step),
                "write_change": write_change(step),
                "reversible": step.reversible,
                "data_intact": step.data_intact,
                "unexpected_changes": list(step.unexpected_changes),
                "regressions": regressions(step),
                "document": step.path.name if step.path else None,
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND_SUMMARY,
        "profile": profile,
        "seed": seed,
        "steps": rows,
        "answers": answers(steps),
    }


def answers(steps: Sequence[StepReport]) -> dict[str, str]:
    """Plain-language answers to "what did each migration teach us"."""
    if not steps:
        return {}
    gains = [(h.speedup or 0.0, h.label, s) for s in steps for h in headlines(s)]
    speedup, label, best = max(gains, key=lambda g: g[0]) if gains else (0.0, "", steps[0])
    costly = max(steps, key=index_bytes_added)
    broken = [s for s in steps if not s.passed]
    writes = {s.migration.id: write_change(s) for s in steps}
    worst_write = min(
        (
            (change, s, table)
            for s in steps
            for table, change in writes[s.migration.id].items()
            if change is not None
        ),
        default=None,
        key=lambda item: item[0],
    )
    slower = [f"{s.migration.id}: {', '.join(regressions(s))}" for s in steps if regressions(s)]
    return {
        "biggest_gain": f"{best.migration.id}: {label} {speedup:.1f}x faster",
        "memory_cost": f"{costly.migration.id} added {index_bytes_added(costly):,} bytes of "
        "indexes (the most of any step)",
        "write_cost": (
            f"{worst_write[1].migration.id}: {worst_write[2]} inserts {worst_write[0]:+.0%}"
            if worst_write
            else "no write measurement"
        ),
        "what_broke": "; ".join(
            f"{s.migration.id}: "
            + ", ".join(
                (["not reversible"] if not s.reversible else [])
                + (["rows lost"] if not s.data_intact else [])
                + [f"unexpected result change in {c}" for c in s.unexpected_changes]
            )
            for s in broken
        )
        or "nothing: every step was reversible, lost no row and changed no result unexpectedly",
        "regressions": "; ".join(slower) or f"none (no headline judged slower by {REGRESSION})",
    }
