"""The verdicts of one paired session (a step's two states, or ``ab``'s two databases),
judged once when the session ends and stored in its document, so that every reader (the
console table, the summary, the Markdown report, ``compare``) shows the same figures
without running the bootstrap again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vpbench.analysis.verdicts import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    Judgement,
    Threshold,
    judge_pairs,
)

PAIRED_RESAMPLES = 1000
"""bootstrap resamples of one paired verdict (a verdict's interval moves by under 1% of
the ratio between 1,000 and 2,000 resamples on the sessions ``steps`` runs)"""


def judge_session_pair(
    before_ns: Sequence[int],
    after_ns: Sequence[int],
    rounds: Sequence[int] | None,
    *,
    threshold: Threshold = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Judgement:
    """The paired verdict on one entry (or one table's insert) of a session: after
    against before, pair by pair, clustered by round."""
    return judge_pairs(
        np.asarray(before_ns, dtype=np.float64) / 1e6,
        np.asarray(after_ns, dtype=np.float64) / 1e6,
        clusters=rounds or None,
        threshold=threshold,
        alpha=alpha,
        resamples=PAIRED_RESAMPLES,
        seed=seed,
    )


def samples_digest(
    before_ns: Sequence[int], after_ns: Sequence[int], rounds: Sequence[int] | None
) -> str:
    """What a verdict was judged on, in 16 hex digits: a stored verdict whose samples were
    changed since (an edited document) no longer matches and is judged again."""
    text = json.dumps([list(before_ns), list(after_ns), list(rounds or ())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PairedEntry(Protocol):
    """One state's measurement of an entry in a paired session."""

    @property
    def name(self) -> str: ...
    @property
    def samples_ns(self) -> Sequence[int]: ...
    @property
    def rounds(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class SessionVerdicts:
    """Each entry's verdict and the rule it was judged by."""

    threshold: Threshold
    alpha: float
    seed: int
    entries: Mapping[str, Judgement]
    digests: Mapping[str, str]
    """per entry, the ``samples_digest`` of what it was judged on"""

    @classmethod
    def judge(
        cls,
        before: Sequence[PairedEntry],
        after: Sequence[PairedEntry],
        threshold: Threshold = DEFAULT_THRESHOLD,
    ) -> SessionVerdicts:
        """Judge every entry both states ran, after against before."""
        by_name = {e.name: e for e in before}
        pairs = [(by_name[e.name], e) for e in after if e.name in by_name]
        return cls(
            threshold,
            DEFAULT_ALPHA,
            0,
            {
                new.name: judge_session_pair(
                    old.samples_ns, new.samples_ns, old.rounds, threshold=threshold
                )
                for old, new in pairs
            },
            {
                new.name: samples_digest(old.samples_ns, new.samples_ns, old.rounds)
                for old, new in pairs
            },
        )

    def stored(
        self,
        name: str,
        before_ns: Sequence[int],
        after_ns: Sequence[int],
        rounds: Sequence[int] | None,
        rule: tuple[Threshold, float, int],
    ) -> Judgement | None:
        """The verdict stored for ``name`` if it was judged on these samples by this rule
        (threshold, alpha, seed); None: the reader judges."""
        if rule != (self.threshold, self.alpha, self.seed) or name not in self.entries:
            return None
        if self.digests.get(name) != samples_digest(before_ns, after_ns, rounds):
            return None
        return self.entries[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": str(self.threshold),
            "alpha": self.alpha,
            "seed": self.seed,
            "resamples": PAIRED_RESAMPLES,
            "entries": {
                name: j.to_dict() | {"samples_digest": self.digests[name]}
                for name, j in self.entries.items()
            },
        }

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> SessionVerdicts | None:
        """The stored verdicts; None when they were judged with another number of resamples
        (readers then judge again)."""
        if stored.get("resamples") != PAIRED_RESAMPLES:
            return None
        return cls(
            Threshold.parse(stored["threshold"]),
            float(stored["alpha"]),
            int(stored["seed"]),
            {name: Judgement.from_dict(j) for name, j in stored["entries"].items()},
            {name: str(j["samples_digest"]) for name, j in stored["entries"].items()},
        )
