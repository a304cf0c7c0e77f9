"""The machine's drift between two runs collected apart, read off the entries that did not
change, so that the entries that did are judged against it rather than against raw timing.

On shared machines every query of a run can be 0.6-0.8x (or 1.3x) what it was in another
run minutes or nights apart. An entry whose plan and buffers did not change between the runs
did the same work, so its ratio is the machine's drift plus noise; the typical ratio over
those entries estimates the drift, and its spread over them gives the interval. An entry
whose plan or buffers changed is then judged relative to it. With fewer than
``MIN_UNCHANGED`` such entries the drift is not estimated, and the comparison says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vpbench.analysis.verdicts import RatioEstimate

MIN_UNCHANGED = 3
"""entries with unchanged plan and buffers needed for a drift estimate"""
RESAMPLES = 2000


@dataclass(frozen=True)
class Drift:
    """How much slower (>1) or faster (<1) the machine ran the unchanged entries."""

    entries: tuple[str, ...]
    """the entries whose plan and buffers did not change, the estimate's evidence"""
    estimate: RatioEstimate | None
    """their median ratio with its interval; None when there are too few of them"""

    @property
    def note(self) -> str:
        """One sentence for the console and the report."""
        count = len(self.entries)
        if self.estimate is None:
            return (
                f"Machine drift not estimated: {count} "
                f"{'entry' if count == 1 else 'entries'} kept plan and buffers "
                f"({MIN_UNCHANGED} needed); changed entries are judged on raw timing"
            )
        found = self.estimate
        return (
            f"Machine drift {found.ratio:.2f}x [{found.low:.2f}, {found.high:.2f}] from "
            f"{count} entries whose plan and buffers did not change; the changed entries "
            "are judged relative to it"
        )

    def to_dict(self) -> dict[str, object]:
        found = self.estimate
        return {
            "entries": list(self.entries),
            "ratio": found.ratio if found else None,
            "ci_low": found.low if found else None,
            "ci_high": found.high if found else None,
        }


def estimate_drift(
    ratios: Mapping[str, float], *, confidence: float = 0.95, seed: int = 0
) -> Drift:
    """The drift from the ratios (new / base, of the judged statistic) of the entries whose
    plan and buffers did not change: their median, with a bootstrap interval over entries
    (on the log scale, so 0.5x and 2x weigh alike)."""
    names = tuple(name for name, r in ratios.items() if r > 0 and math.isfinite(r))
    if len(names) < MIN_UNCHANGED:
        return Drift(names, None)
    logs = np.log(np.array([ratios[name] for name in names], dtype=np.float64))
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(logs, size=(RESAMPLES, logs.size), replace=True), axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    estimate = RatioEstimate(
        float(np.exp(np.median(logs))), float(np.exp(low)), float(np.exp(high)), confidence
    )
    return Drift(names, estimate)
