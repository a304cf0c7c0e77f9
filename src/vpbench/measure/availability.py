"""What a migration did to the live app: stalls, slow and failed requests, against a budget.

A request's stall is how much longer than the at-rest p99 of its kind (reads, writes; from
the baseline window before the migration) it took, for requests that overlapped the
migration. The longest stall is attributed to what the sampler saw that request's session
wait for while it ran: the lock, the relation, the migration statement running then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vpbench.measure.traffic import HeldLock, Request, TrafficRecord, Wait
from vpbench.migrations.apply import StatementRun

KINDS = ("read", "write")
SLOW_MS = 1000.0


@dataclass(frozen=True)
class Stall:
    kind: str
    name: str
    ms: float
    """beyond the at-rest p99"""
    waited_for: str | None
    """``RowExclusiveLock on quiz_attempts``"""
    migration_holds: str | None
    statement: str | None
    """the migration statement running while it waited"""

    def describe(self) -> str:
        text = f"{self.kind} {self.name} stalled {self.ms / 1000:.1f} s"
        if self.waited_for:
            text += f" waiting for {self.waited_for}"
        if self.migration_holds:
            text += f" (the migration holds {self.migration_holds})"
        if self.statement:
            text += f" during `{self.statement}`"
        return text


@dataclass(frozen=True)
class Availability:
    budget_ms: float
    requests: int
    """requests that overlapped the migration"""
    baseline_p99_ms: dict[str, float | None]
    during_p99_ms: dict[str, float | None]
    longest_stall_ms: dict[str, float]
    slow: int
    """requests over 1 s"""
    failed: dict[str, int]
    """``read error 0A000`` -> count: requests that failed, by kind, outcome and SQLSTATE"""
    worst: Stall | None
    samples: int
    failure: str | None = None
    """the migration's error when it failed under load"""
    timeline: tuple[tuple[str, float, float, str], ...] = ()
    """every request as (kind, start in s from the migration's start, ms, outcome)"""
    statements: tuple[StatementRun, ...] = ()
    """the migration's statements as they ran under the traffic"""
    held: tuple[HeldLock, ...] = ()
    """the locks the sampler saw the migration hold, from when until when"""

    @property
    def passed(self) -> bool:
        within = max(self.longest_stall_ms.values(), default=0.0) <= self.budget_ms
        return within and self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


def availability(
    record: TrafficRecord,
    budget_ms: float,
    *,
    failure: str | None = None,
    statements: tuple[StatementRun, ...] = (),
) -> Availability:
    """Stalls of the requests that overlapped the migration in ``record``."""
    start, end = record.migration_s or (0.0, max((r.end_s for r in record.requests), default=0.0))
    before = [r for r in record.requests if r.end_s <= start and r.outcome == "ok"]
    during = [r for r in record.requests if r.start_s < end and r.end_s > start]
    baseline = {kind: _p99([r.ms for r in before if r.kind == kind]) for kind in KINDS}
    stalls = {
        kind: [
            (r.ms - (baseline[kind] or 0.0), r)
            for r in during
            if r.kind == kind and r.ms > (baseline[kind] or 0.0)
        ]
        for kind in KINDS
    }
    longest = {kind: max((ms for ms, _ in found), default=0.0) for kind, found in stalls.items()}
    candidates = [item for found in stalls.values() for item in found]
    worst = max(candidates, key=lambda item: item[0], default=None)
    return Availability(
        budget_ms=budget_ms,
        requests=len(during),
        baseline_p99_ms=baseline,
        during_p99_ms={kind: _p99([r.ms for r in during if r.kind == kind]) for kind in KINDS},
        longest_stall_ms=longest,
        slow=sum(r.ms > SLOW_MS for r in during),
        failed=dict(
            Counter(
                f"{r.kind} {r.outcome} {r.sqlstate}" if r.sqlstate else f"{r.kind} {r.outcome}"
                for r in during
                if r.outcome != "ok"
            )
        ),
        worst=_stall(worst[1], worst[0], record.waits) if worst else None,
        samples=record.samples,
        failure=failure,
        statements=statements,
        held=record.held,
        timeline=tuple(
            (r.kind, round(r.start_s - start, 4), round(r.ms, 3), r.outcome)
            for r in record.requests
        ),
    )


def describe_availability(found: Availability) -> str:
    """One line: the longest stalls against the budget, and what caused the worst."""
    stalls = ", ".join(f"{kind}s {found.longest_stall_ms[kind] / 1000:.2f} s" for kind in KINDS)
    verdict = "within" if found.passed else "over"
    text = f"under load: longest stall {stalls} ({verdict} the {found.budget_ms / 1000:g} s budget)"
    if found.failed:
        text += "; failed " + ", ".join(f"{n} {o}" for o, n in sorted(found.failed.items()))
    if found.failure:
        text += f"; up failed under load: {found.failure}"
    if found.worst and not found.passed:
        text += f"; worst: {found.worst.describe()}"
    return text


def _p99(values: list[float]) -> float | None:
    return float(np.percentile(values, 99)) if values else None


def _stall(request: Request, ms: float, waits: tuple[Wait, ...]) -> Stall:
    """The request's stall, with what its session was seen waiting for while it ran."""
    seen = [
        w
        for w in waits
        if w.session == request.session and request.start_s <= w.at_s <= request.end_s
    ]
    blamed = [w for w in seen if w.by_migration] or seen
    if not blamed:
        return Stall(request.kind, request.name, ms, None, None, None)
    (waited, holds, statement), _ = Counter(
        (w.waits_for, w.migration_holds, w.statement) for w in blamed
    ).most_common(1)[0]
    return Stall(request.kind, request.name, ms, waited, holds, statement)
