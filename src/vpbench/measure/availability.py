"""What a migration did to the live app: blocked, slowed and failed requests, against a budget.

Two different facts, with different fixes:

- **blocked**: a request waited for a lock the migration was in the way of (the sampler saw
  its session waiting with the migration's session among the blockers, directly or behind
  another waiter). How long it waited runs from the wait's start (``pg_locks.waitstart``) to
  its end, which lies between the last sample that saw it and the next sample (or the
  request's end, whichever is first): an interval as wide as one sampling period. The
  longest wait per kind (reads, writes) is what the stall budget judges: reshape the step.
- **slowed**: a request took longer than it does at rest without such a wait: it shared the
  CPU and disks with the migration. Each request's latency is taken relative to the at-rest
  median of its own query (or table written), and the p99 of those relative latencies while
  the migration ran is compared with their p99 at rest: a ratio with a bootstrap interval.
  At rest leaves out each session's first request of each query (it prepared the statement).
  Reported, never judged as downtime: the fix is capacity or a throttled backfill.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vpbench.analysis.verdicts import bootstrap_ratio
from vpbench.measure.traffic import HeldLock, Request, TrafficRecord, Wait, warmed
from vpbench.migrations.apply import StatementRun

KINDS = ("read", "write")
SLOW_MS = 1000.0


@dataclass(frozen=True)
class Blocked:
    """The longest wait of one kind of request for a lock the migration was in the way of."""

    kind: str
    name: str
    """the query, or the table written"""
    ms: float
    """the wait, midway between its bounds"""
    low_ms: float
    high_ms: float
    """the wait ended between the last sample that saw it and the next one"""
    waited_for: str | None
    """``RowExclusiveLock on quiz_attempts``"""
    migration_holds: str | None
    statement: str | None
    """the migration statement running while it waited"""
    migration_waits: str | None = None
    """the lock the migration was itself queued for, ahead of the request (a lock queue)"""

    def describe(self) -> str:
        text = f"{self.kind} {self.name} blocked {self.ms / 1000:.2f} s"
        if self.waited_for:
            text += f" waiting for {self.waited_for}"
        if self.migration_waits:
            text += f" behind the migration's queued {self.migration_waits}"
        elif self.migration_holds:
            text += f" (the migration holds {self.migration_holds})"
        if self.statement:
            text += f" during `{self.statement}`"
        return text


@dataclass(frozen=True)
class Slowed:
    """How much slower one kind of request ran while the migration ran, without a lock wait."""

    kind: str
    requests: int
    """unblocked, successful requests during the migration with an at-rest baseline"""
    at_rest: int
    """successful requests before the migration started"""
    ratio: float | None
    """p99 under load / p99 at rest, of latencies relative to their query's at-rest median"""
    low: float | None
    high: float | None
    """its 95% bootstrap interval (None with fewer than two requests on a side)"""
    slowest: str | None
    """the unblocked request furthest beyond its query's at-rest p99"""
    slowest_ms: float | None
    slowest_at_rest_p99_ms: float | None

    def describe(self) -> str:
        if self.ratio is None:
            return f"{self.kind}s not measured"
        interval = (
            "" if self.low is None or self.high is None else f" [{self.low:.2f}, {self.high:.2f}]"
        )
        return f"{self.kind}s p99 {self.ratio:.2f}x{interval} ({self.requests} requests)"


@dataclass(frozen=True)
class Availability:
    budget_ms: float
    requests: int
    """requests that overlapped the migration"""
    blocked: dict[str, Blocked | None]
    """per kind, the longest lock wait on the migration (None: no request waited for it)"""
    blocked_requests: dict[str, int]
    """per kind, requests that waited for a lock the migration was in the way of"""
    slowed: dict[str, Slowed]
    slow: int
    """requests over 1 s"""
    failed: dict[str, int]
    """``read error 0A000`` -> count: requests that failed, by kind, outcome and SQLSTATE"""
    samples: int
    failure: str | None = None
    """the migration's error when it failed under load"""
    timeline: tuple[tuple[str, float, float, str, float], ...] = ()
    """every request as (kind, start in s from the migration's start, ms, outcome, ms
    blocked by the migration)"""
    statements: tuple[StatementRun, ...] = ()
    """the migration's statements as they ran under the traffic"""
    held: tuple[HeldLock, ...] = ()
    """the locks the sampler saw the migration hold, from when until when"""

    @property
    def blocked_ms(self) -> dict[str, float]:
        """Per kind, the longest lock wait on the migration (0 when none)."""
        return {kind: found.ms if (found := self.blocked[kind]) else 0.0 for kind in KINDS}

    @property
    def worst(self) -> Blocked | None:
        """The longest lock wait of any kind."""
        waits = [found for found in self.blocked.values() if found]
        return max(waits, key=lambda found: found.ms, default=None)

    @property
    def within_budget(self) -> bool:
        """No request waited for the migration's locks longer than the budget."""
        return max(self.blocked_ms.values(), default=0.0) <= self.budget_ms

    @property
    def passed(self) -> bool:
        return self.within_budget and self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"blocked_ms": self.blocked_ms, "passed": self.passed}


@dataclass(frozen=True)
class _Waited:
    """One request's time waiting for the migration's locks."""

    low_ms: float
    high_ms: float
    cause: tuple[str, str | None, str | None, str | None]
    """what it waited for, what the migration held, the migration statement then, what the
    migration was queued for"""

    @property
    def ms(self) -> float:
        return (self.low_ms + self.high_ms) / 2


def availability(
    record: TrafficRecord,
    budget_ms: float,
    *,
    failure: str | None = None,
    statements: tuple[StatementRun, ...] = (),
) -> Availability:
    """Blocked and slowed requests among those that overlapped the migration in ``record``."""
    start, end = record.migration_s or (0.0, max((r.end_s for r in record.requests), default=0.0))
    at_rest = [r for r in warmed(record.requests) if r.end_s <= start and r.outcome == "ok"]
    during = [r for r in record.requests if r.start_s < end and r.end_s > start]
    waited = _lock_waits(record)
    blocked: dict[str, Blocked | None] = {}
    for kind in KINDS:
        mine = [(waited[r], r) for r in during if r.kind == kind and r in waited]
        longest = max(mine, key=lambda item: item[0].ms, default=None)
        blocked[kind] = _blocked(*longest) if longest else None
    unblocked = [r for r in during if r not in waited and r.outcome == "ok"]
    return Availability(
        budget_ms=budget_ms,
        requests=len(during),
        blocked=blocked,
        blocked_requests={
            kind: sum(r.kind == kind for r in during if r in waited) for kind in KINDS
        },
        slowed={kind: _slowed(kind, at_rest, unblocked) for kind in KINDS},
        slow=sum(r.ms > SLOW_MS for r in during),
        failed=dict(
            Counter(
                f"{r.kind} {r.outcome} {r.sqlstate}" if r.sqlstate else f"{r.kind} {r.outcome}"
                for r in during
                if r.outcome != "ok"
            )
        ),
        samples=record.samples,
        failure=failure,
        statements=statements,
        held=record.held,
        timeline=tuple(
            (
                r.kind,
                round(r.start_s - start, 4),
                round(r.ms, 3),
                r.outcome,
                round(waited[r].ms, 3) if r in waited else 0.0,
            )
            for r in record.requests
        ),
    )


def refused_by_constraint(failure: str) -> bool:
    """``write error 23514`` (a key of ``Availability.failed``): a constraint refused the
    row (SQLSTATE class 23), the data's fault rather than the step's."""
    return failure.rsplit(" ", 1)[-1].startswith("23")


def describe_availability(found: Availability) -> str:
    """One line: the longest lock waits against the budget, how much the rest slowed down,
    and what the worst wait waited for."""
    blocked = ", ".join(f"{kind}s {found.blocked_ms[kind] / 1000:.2f} s" for kind in KINDS)
    verdict = "within" if found.within_budget else "over"
    text = f"under load: blocked {blocked} ({verdict} the {found.budget_ms / 1000:g} s budget)"
    text += "; slowed " + ", ".join(found.slowed[kind].describe() for kind in KINDS)
    if found.failed:
        text += "; failed " + ", ".join(f"{n} {o}" for o, n in sorted(found.failed.items()))
    if found.failure:
        text += f"; up failed under load: {found.failure}"
    if found.worst and not found.passed:
        text += f"; worst: {found.worst.describe()}"
    return text


def _lock_waits(record: TrafficRecord) -> dict[Request, _Waited]:
    """Each request that waited for a lock the migration was in the way of, and how long.

    A wait is one lock one session waited for since one moment (``waitstart``; before
    PostgreSQL 14, the sample before the first that saw it). It ended after the last sample
    that saw it and before the next sample, and before its request ended."""
    sampled = np.asarray(record.sampled_s, dtype=np.float64)
    by_session: dict[str, list[Request]] = defaultdict(list)
    for request in sorted(record.requests, key=lambda r: r.start_s):
        by_session[request.session].append(request)
    begun = {session: [r.start_s for r in mine] for session, mine in by_session.items()}
    episodes: dict[tuple[Request, str], list[Wait]] = defaultdict(list)
    for wait in record.waits:
        mine = by_session[wait.session]  # one request at a time per session, in order
        index = bisect.bisect_right(begun.get(wait.session, []), wait.at_s) - 1
        if index >= 0 and wait.at_s <= mine[index].end_s:
            episodes[(mine[index], wait.waits_for)].append(wait)
    found: dict[Request, _Waited] = {}
    for (request, _), seen in episodes.items():
        blamed = [w for w in seen if w.by_migration]
        if not blamed:
            continue
        first, last = min(w.at_s for w in seen), max(w.at_s for w in seen)
        starts = [w.since_s for w in seen if w.since_s is not None]
        since = min(starts) if starts else None
        if since is not None:
            began_low = began_high = max(since, request.start_s)
        else:
            began_low, began_high = max(_previous(sampled, first), request.start_s), first
        ended_high = min(_next(sampled, last), request.end_s)
        cause, _ = Counter(
            (w.waits_for, w.migration_holds, w.statement, w.migration_waits) for w in blamed
        ).most_common(1)[0]
        low, high = max(0.0, last - began_high) * 1e3, max(0.0, ended_high - began_low) * 1e3
        if request in found:  # a second wait of the same request: they add up
            earlier = found[request]
            longer = cause if high > earlier.high_ms else earlier.cause
            low, high, cause = low + earlier.low_ms, high + earlier.high_ms, longer
        found[request] = _Waited(low, high, cause)
    return found


def _previous(sampled: np.ndarray[Any, np.dtype[np.float64]], at: float) -> float:
    index = int(np.searchsorted(sampled, at, side="left")) - 1
    return float(sampled[index]) if index >= 0 else -math.inf


def _next(sampled: np.ndarray[Any, np.dtype[np.float64]], at: float) -> float:
    index = int(np.searchsorted(sampled, at, side="right"))
    return float(sampled[index]) if index < sampled.size else math.inf


def _blocked(waited: _Waited, request: Request) -> Blocked:
    waits_for, holds, statement, queued = waited.cause
    return Blocked(request.kind, request.name, waited.ms, waited.low_ms, waited.high_ms,
                   waits_for, holds, statement, queued)  # fmt: skip


def _slowed(kind: str, at_rest: Sequence[Request], during: Sequence[Request]) -> Slowed:
    """The p99 of latencies relative to their query's at-rest median, under load against
    at rest, and the request furthest beyond its query's at-rest p99."""
    rest: dict[str, list[float]] = defaultdict(list)
    for request in at_rest:
        if request.kind == kind:
            rest[request.name].append(request.ms)
    medians = {name: float(np.median(values)) for name, values in rest.items()}
    p99s = {name: float(np.percentile(values, 99)) for name, values in rest.items()}
    judged = [r for r in during if r.kind == kind and medians.get(r.name, 0.0) > 0]
    relative_rest = [
        r.ms / medians[r.name] for r in at_rest if r.kind == kind and medians[r.name] > 0
    ]
    relative_load = [r.ms / medians[r.name] for r in judged]
    ratio = low = high = None
    if judged and relative_rest:
        estimate = bootstrap_ratio(relative_rest, relative_load, statistic="p99", resamples=1000)
        ratio = estimate.ratio
        if not (math.isnan(estimate.low) or math.isnan(estimate.high)):
            low, high = estimate.low, estimate.high
    slowest = max(judged, key=lambda r: r.ms - p99s[r.name], default=None)
    return Slowed(
        kind=kind,
        requests=len(judged),
        at_rest=sum(len(values) for values in rest.values()),
        ratio=ratio,
        low=low,
        high=high,
        slowest=slowest.name if slowest else None,
        slowest_ms=slowest.ms if slowest else None,
        slowest_at_rest_p99_ms=p99s[slowest.name] if slowest else None,
    )
