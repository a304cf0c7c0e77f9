"""Where a step's time went: the seconds of each phase, and the most disk its copies held.

A step is timed lap by lap: each lap ends one phase and adds its seconds to that phase's
total. At every lap the free space of the server's disk is read where it is visible, so the
high-water mark counts every copy the step held at a phase's end (copies exist from one
phase to a later one, never inside one only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

PHASES = (
    "settle",
    "audit",
    "backup",
    "up",
    "rehearsal",
    "copies",
    "paired rounds",
    "equivalence",
    "write cost",
    "reversibility",
)
"""in the order a step runs them"""
HARNESS_FREE = ("up", "paired rounds")
"""what the migration itself and the paired-round budget take: the rest is the harness's"""


class PhaseClock:
    """Seconds per phase, and the disk high-water mark, of one step."""

    def __init__(self, free_bytes: Callable[[], int | None] = lambda: None) -> None:
        self._free_bytes = free_bytes
        self._last = time.perf_counter()
        self._free_at_start = free_bytes()
        self._least_free = self._free_at_start
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> float:
        """End ``phase`` now; returns its seconds in this lap."""
        now = time.perf_counter()
        spent, self._last = now - self._last, now
        self.seconds[phase] = self.seconds.get(phase, 0.0) + spent
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


def where_the_time_went(
    phases: Sequence[Mapping[str, float]], total_seconds: float
) -> tuple[list[TimeSpent], float]:
    """Each phase's seconds summed over the steps (``phases``, one mapping per step), the
    rest of the wall time (seeding, metadata, reports) as ``other``, and the harness's
    share: everything but the migrations' own ``up`` and the paired rounds."""
    total = max(total_seconds, 1e-9)
    sums = {phase: sum(step.get(phase, 0.0) for step in phases) for phase in PHASES}
    sums["other"] = max(total_seconds - sum(sums.values()), 0.0)
    rows = [TimeSpent(phase, seconds, seconds / total) for phase, seconds in sums.items()]
    harness = total_seconds - sum(sums[phase] for phase in HARNESS_FREE)
    return rows, max(harness, 0.0) / total
