"""Blocked and slowed from constructed traffic records: the arithmetic, without a clock."""

from __future__ import annotations

import pytest

from vpbench.measure.availability import availability
from vpbench.measure.traffic import Request, TrafficRecord, Wait

PERIOD = 0.05
SAMPLED = tuple(round(i * PERIOD, 3) for i in range(200))  # 0 .. 9.95 s
MIGRATION = (3.0, 6.0)


def _at_rest(kind: str, name: str, ms: float, count: int = 20) -> list[Request]:
    """``count`` requests of one query before the migration, back to back from 0.1 s."""
    session = f"{kind} 9"
    return [Request(session, kind, name, 0.1 + i * 0.1, ms, "ok") for i in range(count)]


def _waits(session: str, start: float, end: float, *, since: float | None, by: bool) -> list[Wait]:
    """The sampler's sightings of one session waiting from ``start`` to ``end``."""
    return [
        Wait(
            at,
            session,
            "RowExclusiveLock on quiz_attempts",
            since,
            by,
            "SELECT pg_sleep(3)",
            "AccessExclusiveLock",
        )
        for at in SAMPLED
        if start <= at <= end
    ]


def _record(requests: list[Request], waits: list[Wait]) -> TrafficRecord:
    return TrafficRecord(
        tuple(sorted(requests, key=lambda r: r.start_s)), tuple(waits), SAMPLED, MIGRATION
    )


def test_a_wait_runs_from_waitstart_to_within_a_sampling_period() -> None:
    """Seen waiting from 3.05 to 5.0 s since 3.02 s; the request ended at 5.03 s, before the
    next sample (5.05): the wait lasted between 1.98 and 2.01 s."""
    write = Request("write 1", "write", "quiz_attempts", 3.01, 2020.0, "ok")
    record = _record(
        [*_at_rest("write", "quiz_attempts", 1.0), write],
        _waits("write 1", 3.03, 5.0, since=3.02, by=True),
    )
    found = availability(record, budget_ms=1000)
    blocked = found.blocked["write"]
    assert blocked is not None
    assert blocked.low_ms == pytest.approx(1980.0)
    assert blocked.high_ms == pytest.approx(2010.0)
    assert blocked.ms == pytest.approx(1995.0)
    assert blocked.waited_for == "RowExclusiveLock on quiz_attempts"
    assert blocked.statement == "SELECT pg_sleep(3)"
    assert found.blocked["read"] is None and found.blocked_ms["read"] == 0.0
    assert not found.passed
    assert availability(record, budget_ms=2500).passed  # the twin: within a longer budget
    assert found.timeline[-1][4] == pytest.approx(1995.0)


def test_without_waitstart_the_start_lies_between_two_samples() -> None:
    """PostgreSQL 13 has no ``waitstart``: the wait began after the sample before the first
    that saw it (or the request's start, if later)."""
    read = Request("read 1", "read", "attempts", 3.01, 2100.0, "ok")
    record = _record(
        [*_at_rest("read", "attempts", 1.0), read],
        _waits("read 1", 3.05, 5.0, since=None, by=True),
    )
    blocked = availability(record, budget_ms=1000).blocked["read"]
    assert blocked is not None
    assert blocked.low_ms == pytest.approx(5000.0 - 3050.0)  # first to last sighting
    assert blocked.high_ms == pytest.approx(5050.0 - 3010.0)  # request start to next sample


def test_a_wait_the_migration_is_not_in_the_way_of_is_not_blocked() -> None:
    """Waiting for another traffic session is contention: slowed, not blocked."""
    write = Request("write 1", "write", "quiz_attempts", 3.5, 800.0, "ok")
    record = _record(
        [*_at_rest("write", "quiz_attempts", 1.0), write],
        _waits("write 1", 3.5, 4.25, since=3.5, by=False),
    )
    found = availability(record, budget_ms=100)
    assert found.blocked == {"read": None, "write": None} and found.passed
    slowed = found.slowed["write"]
    assert slowed.requests == 1 and slowed.slowest == "quiz_attempts"
    assert slowed.slowest_ms == 800.0 and slowed.slowest_at_rest_p99_ms == pytest.approx(1.0)


def test_slowed_compares_each_request_with_its_own_query_at_rest() -> None:
    """A slow query and a fast one, both 3x slower under load: the ratio reads 3x, not the
    slow query's latency over the fast one's; blocked stays zero and the budget passes."""
    rest = _at_rest("read", "fast", 1.0) + _at_rest("read", "slow", 400.0)
    rest = [
        Request(r.session, r.kind, r.name, r.start_s, r.ms * (1 + 0.01 * (i % 5)), "ok")
        for i, r in enumerate(rest)
    ]
    load = [
        Request("read 1", "read", name, 3.0 + i * 0.05, ms * 3 * (1 + 0.01 * (i % 5)), "ok")
        for i, (name, ms) in enumerate([("fast", 1.0), ("slow", 400.0)] * 20)
    ]
    found = availability(_record(rest + load, []), budget_ms=1000)
    slowed = found.slowed["read"]
    assert slowed.ratio == pytest.approx(3.0, rel=0.05)
    assert slowed.low is not None and slowed.high is not None and slowed.low > 1
    assert found.passed and found.blocked_ms == {"read": 0.0, "write": 0.0}
    # the twin: the same traffic without a slowdown reads 1x
    same = [Request(r.session, r.kind, r.name, r.start_s, r.ms / 3, r.outcome) for r in load]
    unchanged = availability(_record(rest + same, []), budget_ms=1000).slowed["read"]
    assert unchanged.ratio == pytest.approx(1.0, rel=0.05)
