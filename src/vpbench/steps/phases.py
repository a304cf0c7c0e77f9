"""Where a step's time went: the seconds of each phase, and the most disk its copies held.

A step is timed lap by lap: each lap ends one phase and adds its seconds to that phase's
total. At every lap the free space of the server's disk is read where it is visible, so the
high-water mark counts every copy the step held at a phase's end (copies exist from one
phase to a later one, never inside one only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

PHASES = (
    "settle",
    "audit",
    "backup",
    "parameters",
    "rehearsal",
    "up under load",
    "up",
    "copies",
    "paired rounds",
    "equivalence",
    "old app",
    "write cost",
    "down",
    "reversibility",
)
"""in the order a step runs them"""
HARNESS_FREE = ("up", "up under load", "down", "paired rounds")
"""what the migrations' own statements (``up`` at rest and rehearsed under load, ``down``)
and the paired rounds take: the rest is the harness's"""


class PhaseClock:
    """Seconds per phase, and the disk high-water mark, of one step."""

    def __init__(self, free_bytes: Callable[[], int | None] = lambda: None) -> None:
        self._free_bytes = free_bytes
        self._last = time.perf_counter()
        self._free_at_start = free_bytes()
        self._least_free = self._free_at_start
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str, of_which: tuple[str, float] | None = None) -> float:
        """End ``phase`` now; returns its seconds in this lap. ``of_which``: a part of the
        lap (name, seconds) that counts as a phase of its own (the migration's statements
        within the rehearsal or the reversibility check)."""
        now = time.perf_counter()
        spent, self._last = now - self._last, now
        part = min(of_which[1], spent) if of_which else 0.0
        self.seconds[phase] = self.seconds.get(phase, 0.0) + spent - part
        if of_which:
            self.seconds[of_which[0]] = self.seconds.get(of_which[0], 0.0) + part
        free = self._free_bytes()
        if free is not None and self._least_free is not None:
            self._least_free = min(self._least_free, free)
        return spent

    @property
    def peak_disk_bytes(self) -> int | None:
        """The most disk the step took at once beyond what it started with (None where
        the server's disk is not visible)."""
        if self._free_at_start is None or self._least_free is None:
            return None
        return max(self._free_at_start - self._least_free, 0)


@dataclass(frozen=True)
class TimeSpent:
    """One phase's seconds over a whole series, and its share of the wall time."""

    phase: str
    seconds: float
    share: float


@dataclass(frozen=True)
class SeriesTime:
    """Where a series' wall time went, and the most disk one of its steps held at once."""

    seconds: float
    phases: tuple[TimeSpent, ...]
    """each phase of ``PHASES`` summed over the steps, then ``other`` (seeding, metadata)"""
    harness_share: float
    """everything but ``HARNESS_FREE``: the migrations' own statements and the paired rounds"""
    peak_disk_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def series_time(
    phases: Sequence[Mapping[str, float]], peaks: Sequence[int | None], seconds: float
) -> SeriesTime:
    """The series' time from each step's ``phases`` and disk ``peaks`` and its wall time."""
    total = max(seconds, 1e-9)
    sums = {phase: sum(step.get(phase, 0.0) for step in phases) for phase in PHASES}
    sums["other"] = max(seconds - sum(sums.values()), 0.0)
    harness = max(seconds - sum(sums[phase] for phase in HARNESS_FREE), 0.0) / total
    known = [peak for peak in peaks if peak is not None]
    return SeriesTime(
        seconds,
        tuple(TimeSpent(phase, spent, spent / total) for phase, spent in sums.items()),
        harness,
        max(known) if known else None,
    )
