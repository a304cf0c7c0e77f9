"""Latency statistics: pure functions over arrays of nanosecond samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles and spread of one series, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    cv: float
    """coefficient of variation: stdev / mean"""
    min_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise_latencies(samples_ns: Sequence[int]) -> LatencySummary | None:
    """Summary of the samples, or None when there are none."""
    if len(samples_ns) == 0:
        return None
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    mean = float(ms.mean())
    stdev = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    return LatencySummary(
        count=len(ms),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=mean,
        stdev_ms=stdev,
        cv=stdev / mean if mean > 0 else 0.0,
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
    )


def median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None
