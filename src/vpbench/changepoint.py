"""Step detection for nightly trends: where a query's level moved, and by how much.

Binary segmentation of log(values) proposes candidate steps down to ``min_size`` points;
backward elimination then drops the weakest candidate that fails the tests until every
remaining step passes them against its neighbouring segments. Proposing before testing
finds a short excursion (up for a few nights, then back down) that a single top-level
split of the whole series would blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from vpbench.compare import mann_whitney_p

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ChangePoint:
    """A step in a series: the new level starts at ``index``."""

    index: int
    """first index of the new level, in the original series"""
    before: float
    """median of the segment before"""
    after: float
    """median of the segment after"""
    ratio: float
    """after / before"""
    p_value: float
    """Mann-Whitney, segment before against segment after; not corrected for the search"""


def detect_change_points(
    values: Sequence[float],
    *,
    min_size: int = 3,
    min_ratio: float = 1.10,
    alpha: float = 0.01,
) -> list[ChangePoint]:
    """Steps in ``values`` (e.g. nightly medians), sorted by index.

    A step is kept when both neighbouring segments have at least ``min_size`` points, their
    medians differ by ``min_ratio`` or more (either direction) and their Mann-Whitney p is
    below ``alpha``. The p-value is not corrected for choosing the split, so ``min_ratio``
    carries most of the protection against noise. NaN and non-positive values are skipped;
    indices refer to the original series. Deterministic.
    """
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, not {min_size}")
    if min_ratio < 1:
        raise ValueError(f"min_ratio must be at least 1, not {min_ratio}")
    series = np.asarray(values, dtype=np.float64).ravel()
    kept = np.flatnonzero(np.isfinite(series) & (series > 0))
    level = series[kept]
    if level.size < 2 * min_size:
        return []
    logs = np.log(level)
    steps = _Steps(level, min_ratio=min_ratio, alpha=alpha)
    bounds = steps.prune([0, *_segment(logs, steps, min_size), level.size])
    found = []
    for start, split, end in zip(bounds, bounds[1:], bounds[2:], strict=False):
        step = steps.between(start, split, end)
        found.append(
            ChangePoint(int(kept[split]), step.before, step.after, step.ratio, step.p_value)
        )
    return found


def _best_interval(logs: FloatArray, start: int, end: int, min_size: int) -> tuple[int, int] | None:
    """The part of ``logs[start:end]`` whose mean differs most from the rest's.

    A part touching either end is an ordinary split; one in the middle is an excursion.
    Every resulting piece has at least ``min_size`` points. O(n²) memory and time.
    """
    size = end - start
    if size < 2 * min_size:
        return None
    sums = np.concatenate([[0.0], np.cumsum(logs[start:end])])
    first = np.arange(size + 1)[:, np.newaxis]
    stop = np.arange(size + 1)[np.newaxis, :]
    inside = stop - first
    valid = (
        (inside >= min_size)
        & (size - inside >= min_size)
        & ((first == 0) | (first >= min_size))
        & ((stop == size) | (size - stop >= min_size))
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        inside_sum = sums[stop] - sums[first]
        shift = inside_sum / inside - (sums[size] - inside_sum) / (size - inside)
        score = np.abs(shift) * np.sqrt(inside * (size - inside) / size)
    score = np.where(valid, score, -1.0)
    best_first, best_stop = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[best_first, best_stop] <= 0:
        return None
    return start + int(best_first), start + int(best_stop)


def _segment(logs: FloatArray, steps: _Steps, min_size: int) -> list[int]:
    """Top-down: split off the most different part while it passes the tests, then recurse."""
    found = []
    pending = [(0, logs.size)]
    while pending:
        start, end = pending.pop()
        interval = _best_interval(logs, start, end, min_size)
        if interval is None or not steps.excursion(start, *interval, end).accepted:
            continue
        cuts = [cut for cut in interval if start < cut < end]
        found += cuts
        pieces = [start, *cuts, end]
        pending += pairwise(pieces)
    return sorted(found)


@dataclass(frozen=True)
class _Step:
    before: float
    after: float
    ratio: float
    p_value: float
    strength: float
    """|log ratio| scaled by segment sizes: which candidate to drop first"""
    accepted: bool


class _Steps:
    """Tests of a step against its neighbouring segments, cached by segment bounds."""

    def __init__(self, level: FloatArray, *, min_ratio: float, alpha: float) -> None:
        self._level = level
        self._min_log_ratio = math.log(min_ratio)
        self._alpha = alpha
        self._cache: dict[tuple[int, int, int], _Step] = {}

    def between(self, start: int, split: int, end: int) -> _Step:
        """``level[split:end]`` against ``level[start:split]``."""
        key = (start, split, end)
        if key not in self._cache:
            self._cache[key] = self._test(self._level[start:split], self._level[split:end])
        return self._cache[key]

    def excursion(self, start: int, first: int, stop: int, end: int) -> _Step:
        """``level[first:stop]`` against the rest of ``level[start:end]``."""
        rest = np.concatenate([self._level[start:first], self._level[stop:end]])
        return self._test(rest, self._level[first:stop])

    def _test(self, before_values: FloatArray, after_values: FloatArray) -> _Step:
        before, after = float(np.median(before_values)), float(np.median(after_values))
        log_ratio = math.log(after / before)
        p_value = mann_whitney_p(before_values, after_values)
        n_before, n_after = before_values.size, after_values.size
        return _Step(
            before=before,
            after=after,
            ratio=after / before,
            p_value=p_value,
            strength=abs(log_ratio) * math.sqrt(n_before * n_after / (n_before + n_after)),
            accepted=abs(log_ratio) >= self._min_log_ratio and p_value < self._alpha,
        )

    def prune(self, bounds: list[int]) -> list[int]:
        """Drop the weakest failing step, retest its neighbours, until all steps pass."""
        bounds = list(bounds)
        while len(bounds) > 2:
            steps = [
                self.between(start, split, end)
                for start, split, end in zip(bounds, bounds[1:], bounds[2:], strict=False)
            ]
            failing = [i for i, step in enumerate(steps) if not step.accepted]
            if not failing:
                break
            weakest = min(failing, key=lambda i: steps[i].strength)
            del bounds[weakest + 1]
        return bounds
