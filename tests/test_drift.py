"""Runs collected apart on a machine that drifted: the entries whose plan and buffers did not
change give the drift, and the changed ones are judged relative to it. The case seen on
``small``: every entry of the second run 0.6-0.8x the first, one plan changed by a dropped
index, and that entry was called faster."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vpbench.analysis.comparison import compare_sides, load_sides
from vpbench.analysis.drift import MIN_UNCHANGED, estimate_drift
from vpbench.analysis.verdicts import judge

LEGACY = Path(__file__).parent / "data" / "runs" / "legacy.json"
CHANGED = "video_page"


def drifted(tmp_path: Path, change: float, *, drift: Callable[[int], float]) -> Path:
    """The legacy run measured again on a machine that ran entry i ``drift(i)`` times as
    fast, with ``CHANGED``'s plan replaced (more buffers, as a dropped index reads) and its
    time ``change`` times what the machine alone would make it."""
    document: dict[str, Any] = json.loads(LEGACY.read_text())
    rng = np.random.default_rng(7)
    for i, entry in enumerate(document["entries"]):
        factor = drift(i) * (change if entry["name"] == CHANGED else 1.0)
        jitter = rng.uniform(0.97, 1.03, len(entry["samples_ns"]))
        entry["samples_ns"] = [
            int(ns * factor * j) for ns, j in zip(entry["samples_ns"], jitter, strict=True)
        ]
        if entry["name"] == CHANGED:
            for summary in entry["plan_summaries"].values():
                summary["fingerprint"] = "f" * 16
            for explain in entry["explains"]:
                explain["shared_hit_blocks"] *= 3
    path = tmp_path / f"drifted-{change:g}.json"
    path.write_text(json.dumps(document))
    return path


def uniform(i: int) -> float:
    return 0.6 + 0.2 * (i % 5) / 4  # 0.6 to 0.8x, as seen


def test_a_plan_change_on_a_drifting_machine_is_not_called_faster(tmp_path: Path) -> None:
    base, new, paired = load_sides([LEGACY, drifted(tmp_path, 1.0, drift=uniform)])
    raw = compare_sides(base, new, paired_session=paired, seed=1)
    row = next(r for r in raw.rows if r.name == CHANGED)
    assert row.plan_changed is True and row.judgement.verdict != "faster"
    # The twin: judged on raw timing, as before the drift was estimated, it is "faster"
    # (0.6-0.8x, and the plan change agrees).
    samples = [np.asarray(side.entries[CHANGED].samples_ns) / 1e6 for side in (base, new)]
    assert judge(*samples, plan_changed=True, seed=1).verdict == "faster"
    drift = raw.drift
    assert drift is not None and drift.estimate is not None
    assert CHANGED not in drift.entries and len(drift.entries) >= 9
    assert 0.6 <= drift.estimate.low <= drift.estimate.ratio <= drift.estimate.high <= 0.8
    assert f"from {len(drift.entries)} entries whose plan and buffers did not change" in (
        drift.note
    )
    assert "relative to the machine's drift" in row.judgement.reason
    assert not [r.name for r in raw.rows if r.judgement.verdict in ("faster", "slower")]


def test_a_real_slowdown_on_a_drifting_machine_is_still_found(tmp_path: Path) -> None:
    base, new, paired = load_sides([LEGACY, drifted(tmp_path, 3.0, drift=uniform)])
    comparison = compare_sides(base, new, paired_session=paired, seed=1)
    row = next(r for r in comparison.rows if r.name == CHANGED)
    # 3x slower on a machine running 0.6-0.8x: raw timing says about 2.1x.
    assert row.judgement.verdict == "slower"
    assert 2.4 < row.judgement.estimate.ratio < 3.6
    assert [r.name for r in comparison.regressions()] == [CHANGED]


def test_without_enough_unchanged_entries_the_drift_is_not_estimated() -> None:
    found = estimate_drift({"a": 0.7, "b": 0.72})
    assert found.estimate is None and found.entries == ("a", "b")
    assert f"({MIN_UNCHANGED} needed)" in found.note
    steady = estimate_drift({"a": 1.0, "b": 1.0, "c": 1.0})  # the null input reads no drift
    assert steady.estimate is not None
    assert (steady.estimate.low, steady.estimate.ratio, steady.estimate.high) == (1.0, 1.0, 1.0)
