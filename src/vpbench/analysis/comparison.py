"""Compare two measurements of the same workload: two runs, or the two states inside one
step or ``ab`` document (measured in one interleaved session, so timing can be trusted).

Runs collected apart are compared on timing *and* on the deterministic signals — plan
fingerprints and shared buffers — and a difference seen only in noisy timing is called
"inconclusive" (see ``vpbench.analysis.verdicts.judge``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vpbench.analysis.drift import Drift, estimate_drift
from vpbench.analysis.session_verdicts import SessionVerdicts, judge_session_pair
from vpbench.analysis.verdicts import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    Judgement,
    Threshold,
    judge,
    statistic_ratio,
)
from vpbench.errors import IncomparableError, ResultsFormatError, UsageError
from vpbench.results.documents import read_shaped
from vpbench.results.shapes import (
    EntryShape,
    LabelsShape,
    MetadataShape,
    PairedShape,
    RunShape,
    Shape,
)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a label, its metadata and its entries by name."""

    label: str
    path: Path
    metadata: MetadataShape
    entries: dict[str, EntryShape]
    verdicts: SessionVerdicts | None = None
    """the paired verdicts its session stored (on the new side of a step or ab document)"""


@dataclass(frozen=True)
class EntryComparison:
    name: str
    kind: str
    base_p50_ms: float | None
    base_p95_ms: float | None
    new_p50_ms: float | None
    new_p95_ms: float | None
    judgement: Judgement
    plan_changed: bool | None
    base_buffers: float | None
    new_buffers: float | None
    target_ms: float | None

    @property
    def target_met_base(self) -> bool | None:
        return _meets(self.base_p95_ms, self.target_ms)

    @property
    def target_met_new(self) -> bool | None:
        return _meets(self.new_p95_ms, self.target_ms)

    def to_dict(self) -> dict[str, Any]:
        estimate = self.judgement.estimate
        return {
            "name": self.name,
            "kind": self.kind,
            "base_p50_ms": self.base_p50_ms,
            "base_p95_ms": self.base_p95_ms,
            "new_p50_ms": self.new_p50_ms,
            "new_p95_ms": self.new_p95_ms,
            "ratio": estimate.ratio,
            "ci_low": estimate.low,
            "ci_high": estimate.high,
            "p_value": self.judgement.p_value,
            "verdict": self.judgement.verdict,
            "reason": self.judgement.reason,
            "mde": self.judgement.mde,
            "plan_changed": self.plan_changed,
            "base_buffers": self.base_buffers,
            "new_buffers": self.new_buffers,
            "target_ms": self.target_ms,
            "target_met_base": self.target_met_base,
            "target_met_new": self.target_met_new,
        }


def _counted(rows: tuple[EntryComparison, ...], one: str, many: str) -> str:
    return f"{len(rows)} {one if len(rows) == 1 else many} ({', '.join(r.name for r in rows)})"


def _meets(p95: float | None, target: float | None) -> bool | None:
    return None if p95 is None or target is None else p95 <= target


@dataclass(frozen=True)
class Comparison:
    base: Side
    new: Side
    paired_session: bool
    threshold: Threshold
    alpha: float
    rows: tuple[EntryComparison, ...]
    confounder: str | None = None
    """maintenance between runs collected apart that deterministic signals cannot see past"""
    drift: Drift | None = None
    """runs collected apart: the machine's drift, read off the entries that did not change"""

    def regressions(self) -> tuple[EntryComparison, ...]:
        return tuple(r for r in self.rows if r.judgement.verdict == "slower")

    def target_breaches(self) -> tuple[EntryComparison, ...]:
        return tuple(r for r in self.rows if r.target_met_new is False)

    def failure(self, fail_on: str) -> str | None:
        """What fails the comparison under ``fail_on`` (``regression``, ``target`` or
        ``any``): the regressions and target breaches it counts; None when none."""
        found = []
        if fail_on in ("regression", "any") and (regressions := self.regressions()):
            found.append(_counted(regressions, "regression", "regressions"))
        if fail_on in ("target", "any") and (breaches := self.target_breaches()):
            found.append(_counted(breaches, "target breach", "target breaches"))
        return "; ".join(found) or None

    def to_dict(self) -> dict[str, Any]:
        counts = {
            v: sum(r.judgement.verdict == v for r in self.rows)
            for v in ("faster", "slower", "unchanged", "inconclusive")
        }
        return {
            "kind": "comparison",
            "base": {"label": self.base.label, "path": str(self.base.path)},
            "new": {"label": self.new.label, "path": str(self.new.path)},
            "paired_session": self.paired_session,
            "threshold": str(self.threshold),
            "alpha": self.alpha,
            "confounder": self.confounder,
            "drift": self.drift.to_dict() if self.drift else None,
            "verdicts": counts,
            "rows": [r.to_dict() for r in self.rows],
        }


def load_sides(paths: Sequence[Path]) -> tuple[Side, Side, bool]:
    """Two run files/folders, or one step or ab document (its two states, paired)."""
    if len(paths) == 1:
        session = _read(paths[0])
        if not isinstance(session, PairedShape):
            raise ResultsFormatError(
                "a single file must be a step or ab document; give two runs to compare",
                path=paths[0],
            )
        labels = session.labels or LabelsShape(before="before", after="after")
        stored = session.verdicts
        verdicts = SessionVerdicts.from_dict(stored.model_dump()) if stored else None
        before = Side(labels.before, paths[0], session.metadata,
                      {e.name: e for e in session.before})  # fmt: skip
        after = Side(labels.after, paths[0], session.metadata,
                     {e.name: e for e in session.after}, verdicts)  # fmt: skip
        return before, after, True
    if len(paths) != 2:
        raise UsageError("compare takes BASE and NEW (or one step or ab document)")
    base, new = (_run_side(p) for p in paths)
    return base, new, False


def _read(path: Path) -> Shape:
    if not path.exists():
        raise ResultsFormatError("no such results file", path=path)
    return read_shaped(path)


def _run_side(path: Path) -> Side:
    """A run document, or the newest run document in a folder."""
    if path.is_dir():
        runs = sorted((p for p in path.rglob("*.json")), key=lambda p: p.stat().st_mtime)
        documents = [(p, d) for p in runs if isinstance(d := _read(p), RunShape)]
        if not documents:
            raise ResultsFormatError("no run results in this folder", path=path)
        path, run = documents[-1]
    else:
        read = _read(path)
        if not isinstance(read, RunShape):
            raise ResultsFormatError(f"a {read.kind} document, not a run", path=path)
        run = read
    label = run.metadata.label or path.stem
    return Side(label, path, run.metadata, {e.name: e for e in run.entries})


def incomparable_reasons(base: Side, new: Side) -> list[str]:
    """Differences that make timings incomparable: data profile/seed, PostgreSQL major."""
    reasons = []
    for key in ("profile", "seed"):
        a, b = base.metadata.seed.get(key), new.metadata.seed.get(key)
        if a != b:
            reasons.append(f"{key} {a} vs {b}")
    majors = [(side.metadata.postgres.server_version_num or 0) // 10000 for side in (base, new)]
    if majors[0] != majors[1]:
        reasons.append(f"PostgreSQL {majors[0]} vs {majors[1]}")
    return reasons


def maintenance_between(base: Side, new: Side) -> str | None:
    """What, besides the change under test, altered plans and buffers between two runs of
    the same database at the same migration state: VACUUM or ANALYZE (by hand or by
    autovacuum) of some table, or a reseed. None when nothing did, or when the runs
    measured different databases or schema states (their counters do not compare)."""
    old_db, new_db = base.metadata.database, new.metadata.database
    if old_db is None or new_db is None or old_db.name is None or old_db.name != new_db.name:
        return None
    same_schema = base.metadata.applied_migrations == new.metadata.applied_migrations
    if _server(base) != _server(new) or not same_schema:
        return None
    seeded = [side.metadata.seed.get("seeded_at") for side in (base, new)]
    if old_db.oid != new_db.oid or seeded[0] != seeded[1]:
        return "a reseed of the database (new rows, new statistics)"
    touched = [
        f"{name} ({', '.join(work)})"
        for name, old in old_db.maintenance.items()
        if (current := new_db.maintenance.get(name)) is not None
        and (
            work := [
                kind
                for kind, changed in (
                    ("VACUUM", current.vacuums != old.vacuums),
                    ("ANALYZE", current.analyzes != old.analyzes),
                )
                if changed
            ]
        )
    ]
    return f"maintenance of {', '.join(touched)}" if touched else None


def _server(side: Side) -> str:
    """``host:port/db`` of the run, without how it was reached."""
    return (side.metadata.server or "").split(" (", 1)[0]


def compare_sides(
    base: Side,
    new: Side,
    *,
    paired_session: bool,
    threshold: Threshold = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    force: bool = False,
    seed: int = 0,
) -> Comparison:
    """Judge every query and scenario the two sides share."""
    if not paired_session and not force and (reasons := incomparable_reasons(base, new)):
        raise IncomparableError(
            f"runs are not comparable: {'; '.join(reasons)}", hint="pass --force to compare anyway"
        )
    common = [name for name in base.entries if name in new.entries]
    if not common:
        raise IncomparableError(
            f"{base.path} and {new.path} have no query or scenario in common",
            hint="compare runs of the same workload",
        )
    confounder = None if paired_session else maintenance_between(base, new)
    signals = {name: _Signals.of(base.entries[name], new.entries[name]) for name in common}
    drift = None if paired_session else _drift(base, new, signals, threshold, seed)
    rows = []
    for name in common:
        old, cur = base.entries[name], new.entries[name]
        old_ms, new_ms = _samples(old), _samples(cur)
        plan_changed, old_buffers, new_buffers = signals[name]
        ratio = signals[name].buffers_ratio
        relative = drift.estimate if drift and name not in drift.entries else None
        stored = (
            new.verdicts.stored(
                name, old.samples_ns, cur.samples_ns, old.rounds, (threshold, alpha, seed)
            )
            if paired_session and new.verdicts
            else None
        )  # fmt: skip
        if stored is not None:
            judgement = stored  # judged once, when the session ended
        elif (
            paired_session
            and (rounds := old.rounds)
            and (old_ms.size == new_ms.size == len(rounds))
        ):
            # An interleaved session stores its samples pair by pair (same index, same round,
            # same parameters on both sides): judge them that way, clustered by round.
            judgement = judge_session_pair(
                old.samples_ns, cur.samples_ns, rounds, threshold=threshold, alpha=alpha, seed=seed
            )
        else:
            judgement = judge(
                old_ms,
                new_ms,
                threshold=threshold,
                alpha=alpha,
                paired_session=paired_session,
                plan_changed=plan_changed,
                buffers_ratio=ratio,
                confounder=confounder,
                drift=relative,
                seed=seed,
            )
        rows.append(
            EntryComparison(
                name,
                cur.kind,
                _pct(old_ms, 50),
                _pct(old_ms, 95),
                _pct(new_ms, 50),
                _pct(new_ms, 95),
                judgement,
                plan_changed,
                old_buffers,
                new_buffers,
                cur.target_ms if cur.target_ms is not None else old.target_ms,
            )
        )
    return Comparison(base, new, paired_session, threshold, alpha, tuple(rows), confounder,
                      drift)  # fmt: skip


class _Signals(NamedTuple):
    """An entry's deterministic signals between the two sides."""

    plan_changed: bool | None
    old_buffers: float | None
    new_buffers: float | None

    @classmethod
    def of(cls, old: EntryShape, new: EntryShape) -> _Signals:
        return cls(_plan_changed(old, new), _buffers(old), _buffers(new))

    @property
    def buffers_ratio(self) -> float | None:
        """new / base shared buffers; None when either is unknown (or zero)."""
        return (
            self.new_buffers / self.old_buffers if self.old_buffers and self.new_buffers else None
        )


def _drift(
    base: Side, new: Side, signals: Mapping[str, _Signals], threshold: Threshold, seed: int
) -> Drift:
    """The drift from the entries that did the same work in both runs: the same plans, and
    shared buffers within the threshold."""
    up = 1 + threshold.fraction
    unchanged = {
        name: statistic_ratio(_samples(base.entries[name]), _samples(new.entries[name]),
                              threshold.statistic)
        for name, found in signals.items()
        if found.plan_changed is False
        and found.buffers_ratio is not None and 1 / up <= found.buffers_ratio <= up
    }  # fmt: skip
    return estimate_drift(unchanged, seed=seed)


def _samples(entry: EntryShape) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(entry.samples_ns, dtype=np.float64) / 1e6


def _pct(samples: np.ndarray[Any, np.dtype[np.float64]], q: int) -> float | None:
    return float(np.percentile(samples, q)) if samples.size else None


def _buffers(entry: EntryShape) -> float | None:
    values = [e.shared_hit_blocks + e.shared_read_blocks for e in entry.explains]
    return float(np.median(values)) if values else None


def _plan_changed(old: EntryShape, new: EntryShape) -> bool | None:
    before = {k: v.fingerprint for k, v in (old.plan_summaries or {}).items()}
    after = {k: v.fingerprint for k, v in (new.plan_summaries or {}).items()}
    if not before or not after:
        return None
    return before != after
