"""vpbench.analysis.verdicts on seeded synthetic latencies with known answers."""

from __future__ import annotations

import math
import tracemalloc
from collections import Counter
from typing import Any

import numpy as np
import pytest

from vpbench.analysis.verdicts import (
    DEFAULT_THRESHOLD,
    Judgement,
    Threshold,
    bootstrap_ratio,
    judge,
    judge_pairs,
    mann_whitney_p,
)
from vpbench.errors import UsageError

TRIALS = 200
RESAMPLES = 500
"""enough for a 95% interval in the trial loops, and keeps each test well under 2 s"""


def latencies(seed: int, size: int, *, median_ms: float = 100.0, cv: float = 0.05) -> np.ndarray:
    """Lognormal latencies: log-sd ``cv`` gives a coefficient of variation of about ``cv``."""
    return median_ms * np.exp(np.random.default_rng(seed).normal(0.0, cv, size))


def paired_verdicts(shift: float, *, size: int = 30, cv: float = 0.05) -> Counter[str]:
    """Verdicts over TRIALS seeded paired-session runs whose true median ratio is ``shift``."""
    counts: Counter[str] = Counter()
    for trial in range(TRIALS):
        base = latencies(2 * trial, size, cv=cv)
        new = latencies(2 * trial + 1, size, median_ms=100.0 * shift, cv=cv)
        judgement = judge(base, new, paired_session=True, seed=trial, resamples=RESAMPLES)
        counts[judgement.verdict] += 1
    return counts


@pytest.mark.parametrize(
    ("spec", "statistic", "fraction"),
    [
        ("p95:10%", "p95", 0.10),
        ("median:5%", "median", 0.05),
        ("mean:0.1", "mean", 0.1),
        ("5%", "median", 0.05),
        (" P99 : 2.5% ", "p99", 0.025),
        ("min:0%", "min", 0.0),
    ],
)
def test_threshold_parse(spec: str, statistic: str, fraction: float) -> None:
    threshold = Threshold.parse(spec)
    assert threshold.statistic == statistic
    assert threshold.fraction == pytest.approx(fraction)


@pytest.mark.parametrize(
    "spec",
    ["", "p42:5%", "median:-5%", "median:100%", "mean:1.5", "median:fast", "median:", "nan%"],
)
def test_threshold_parse_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(UsageError, match=r"invalid threshold .*e\.g\. median:5% or p95:10%"):
        Threshold.parse(spec)


def test_threshold_str_round_trips() -> None:
    assert str(DEFAULT_THRESHOLD) == "median:5%"
    assert str(Threshold.parse("p95:0.1")) == "p95:10%"
    for spec in ("median:5%", "p95:10%", "mean:2.5%"):
        assert str(Threshold.parse(spec)) == spec


def test_threshold_value() -> None:
    samples = np.arange(1.0, 101.0)
    assert Threshold("median", 0.05).value(samples) == 50.5
    assert Threshold("p95", 0.05).value(samples) == pytest.approx(np.percentile(samples, 95))
    assert Threshold("min", 0.05).value(samples) == 1.0
    assert math.isnan(Threshold("mean", 0.05).value([]))


def test_bootstrap_interval_covers_a_known_20_percent_shift() -> None:
    covered = 0
    for trial in range(100):
        base = latencies(2 * trial, 60)
        new = latencies(2 * trial + 1, 60, median_ms=120.0)
        estimate = bootstrap_ratio(base, new, resamples=RESAMPLES, seed=trial)
        assert estimate.low <= estimate.ratio <= estimate.high
        covered += estimate.low <= 1.2 <= estimate.high
    assert covered >= 90  # nominal 95 %


def test_a_bootstrap_of_many_samples_stays_within_memory() -> None:
    """Live traffic during a long migration gives ~10^5 requests: the p99 interval of 60k
    against 60k takes a few hundred MB (BCa's jackknife would take 29 GB) and still covers
    the true 5% shift."""
    base, new = latencies(1, 60_000), latencies(2, 60_000, median_ms=105.0)
    tracemalloc.start()
    try:
        estimate = bootstrap_ratio(base, new, statistic="p99", resamples=500)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 1024**2, peak
    assert estimate.low < 1.05 < estimate.high and estimate.high - estimate.low < 0.1


def test_bootstrap_is_deterministic_per_seed() -> None:
    base, new = latencies(1, 40), latencies(2, 40, median_ms=120.0)
    first = bootstrap_ratio(base, new, seed=7)
    assert bootstrap_ratio(base, new, seed=7) == first
    assert bootstrap_ratio(base, new, seed=8) != first
    assert first.ratio == pytest.approx(np.median(new) / np.median(base))
    assert first.confidence == 0.95


def test_bootstrap_survives_degenerate_data() -> None:
    flat = np.full(30, 5.0)
    assert bootstrap_ratio(flat, flat) == bootstrap_ratio(flat, flat, seed=1)
    estimate = bootstrap_ratio(flat, flat, statistic="min")
    assert (estimate.ratio, estimate.low, estimate.high) == (1.0, 1.0, 1.0)
    single = bootstrap_ratio([5.0], [6.0])
    assert single.ratio == pytest.approx(1.2)
    assert math.isnan(single.low) and math.isnan(single.high)


def test_mann_whitney_edge_cases() -> None:
    assert mann_whitney_p([1.0], [2.0, 3.0]) == 1.0
    assert mann_whitney_p([4.0, 4.0, 4.0], [4.0, 4.0]) == 1.0
    assert mann_whitney_p(latencies(1, 30), latencies(2, 30, median_ms=120.0)) < 1e-6


def test_aa_pairs_are_never_faster_or_slower() -> None:
    counts: Counter[str] = Counter()
    sizes = np.random.default_rng(0).integers(30, 101, TRIALS)
    for trial, size in enumerate(sizes):
        base, new = latencies(2 * trial, int(size)), latencies(2 * trial + 1, int(size))
        judgement = judge(base, new, paired_session=True, seed=trial, resamples=RESAMPLES)
        counts[judgement.verdict] += 1
    false_positives = counts["slower"] + counts["faster"]
    assert false_positives / TRIALS <= 0.01, counts


def test_aa_pairs_in_a_burst_are_never_faster_or_slower() -> None:
    counts = paired_verdicts(1.0, cv=0.15)
    assert counts["slower"] + counts["faster"] <= 0.01 * TRIALS, counts


def test_paired_20_percent_slowdown_is_found() -> None:
    counts = paired_verdicts(1.2)
    assert counts["slower"] >= 0.95 * TRIALS, counts


def test_paired_10_percent_slowdown_is_found_with_100_samples() -> None:
    counts = paired_verdicts(1.1, size=100)
    assert counts["slower"] >= 0.95 * TRIALS, counts


def test_paired_20_percent_speedup_is_found() -> None:
    counts = paired_verdicts(1 / 1.2)
    assert counts["faster"] >= 0.95 * TRIALS, counts


def test_a_change_below_the_threshold_is_rarely_called_one() -> None:
    # "slower" needs the estimate past 1+f: a real 2% slowdown gets there by chance now
    # and then (the price of finding 10% ones), a 2% one is never called faster.
    counts = paired_verdicts(1.02)
    assert counts["slower"] <= 0.05 * TRIALS and counts["faster"] == 0, counts


def test_a_noisy_measurement_gives_no_verdict_on_its_estimate_alone() -> None:
    # Eight samples a side at 30% noise: the estimate strays past 5% half the time, but
    # the interval is wide, so only a change whose whole interval clears it is called.
    noisy = paired_verdicts(1.0, size=8, cv=0.30)
    assert noisy["slower"] + noisy["faster"] <= 0.01 * TRIALS, noisy
    big = paired_verdicts(2.0, size=8, cv=0.30)
    assert big["slower"] >= 0.95 * TRIALS, big


def test_unpaired_timing_alone_is_inconclusive() -> None:
    base, new = latencies(1, 30), latencies(2, 30, median_ms=120.0)
    judgement = judge(base, new)
    assert judgement.verdict == "inconclusive"
    assert "only noisy timing moved" in judgement.reason
    assert judgement.estimate.low > 1.1 and judgement.p_value < 1e-6


@pytest.mark.parametrize(
    ("shift", "plan_changed", "buffers_ratio", "verdict"),
    [
        (1.2, True, None, "slower"),
        (1.2, False, None, "inconclusive"),
        (1.2, None, 1.5, "slower"),
        (1.2, None, 1.02, "inconclusive"),
        (1.2, None, 0.5, "inconclusive"),
        (1 / 1.2, True, None, "faster"),
        (1 / 1.2, None, 0.5, "faster"),
        (1 / 1.2, None, 1.5, "inconclusive"),
    ],
)
def test_unpaired_timing_needs_a_deterministic_signal(
    shift: float, plan_changed: bool | None, buffers_ratio: float | None, verdict: str
) -> None:
    base, new = latencies(1, 30), latencies(2, 30, median_ms=100.0 * shift)
    judgement = judge(base, new, plan_changed=plan_changed, buffers_ratio=buffers_ratio)
    assert judgement.verdict == verdict, judgement.reason


def test_reason_names_ratio_interval_p_and_signals() -> None:
    base, new = latencies(1, 30), latencies(2, 30, median_ms=120.0)
    judgement = judge(base, new, plan_changed=True, buffers_ratio=1.4)
    assert judgement.reason.startswith("median 1.2")
    assert "(95% CI 1." in judgement.reason
    assert "p=" in judgement.reason
    assert judgement.reason.endswith("plan changed, buffers 1.40x")


def test_threshold_statistic_is_the_one_compared() -> None:
    base = latencies(1, 100)
    new = base.copy()
    new[-10:] *= 3.0  # a slow tail: p95 moves, the median does not
    by_median = judge(base, new, paired_session=True)
    by_p95 = judge(base, new, threshold=Threshold.parse("p95:10%"), paired_session=True)
    assert by_median.estimate.ratio == pytest.approx(1.0, abs=0.02)
    assert by_p95.estimate.ratio > 2.0
    assert by_p95.reason.startswith("p95 ")


def test_identical_samples_are_unchanged() -> None:
    flat = np.full(30, 5.0)
    judgement = judge(flat, flat)
    assert judgement.verdict == "unchanged"
    assert judgement.p_value == 1.0


@pytest.mark.parametrize(("base", "new"), [([], []), ([], [1.0, 2.0]), ([1.0, 2.0], [])])
def test_empty_input_is_inconclusive(base: list[float], new: list[float]) -> None:
    judgement = judge(base, new)
    assert isinstance(judgement, Judgement)
    assert judgement.verdict == "inconclusive"
    assert math.isnan(judgement.estimate.ratio)


def _session(
    rng: np.random.Generator, slowdown: float, rounds: int = 6, block: int = 5
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """An interleaved session: per-round machine drift and per-sample parameters shared by
    both sides, plus independent 5% noise per execution."""
    drift = np.repeat(rng.lognormal(0.0, 0.15, rounds), block)
    params = rng.lognormal(0.0, 0.5, rounds * block)
    base = 20.0 * drift * params * rng.normal(1.0, 0.05, rounds * block)
    new = 20.0 * slowdown * drift * params * rng.normal(1.0, 0.05, rounds * block)
    return base, new


def test_paired_judge_a_a_false_positives() -> None:
    verdicts = [
        judge_pairs(*_session(np.random.default_rng(seed), 1.0), block=5, resamples=400).verdict
        for seed in range(200)
    ]
    assert verdicts.count("slower") + verdicts.count("faster") <= 2  # <= 1%


def test_paired_judge_detects_a_20_percent_slowdown() -> None:
    verdicts = [
        judge_pairs(*_session(np.random.default_rng(seed), 1.2), block=5, resamples=400).verdict
        for seed in range(200)
    ]
    assert verdicts.count("slower") >= 190  # >= 95%
    assert "faster" not in verdicts


def test_paired_judge_needs_rounds() -> None:
    assert judge_pairs([1.0, 2.0], [1.0, 2.0], block=5).verdict == "inconclusive"
    assert judge_pairs([], [], block=5).verdict == "inconclusive"


def _noisy_session(seed: int, slowdown: float, noise: float) -> tuple[Any, Any]:
    """Ten rounds of three pairs, independent lognormal noise per execution."""
    rng = np.random.default_rng(seed)
    return 20 * rng.lognormal(0, noise, 30), 20 * slowdown * rng.lognormal(0, noise, 30)


def _paired_counts(slowdown: float, noise: float) -> Counter[str]:
    return Counter(
        judge_pairs(*_noisy_session(seed, slowdown, noise), block=3, resamples=400).verdict
        for seed in range(300)
    )


def test_a_noisy_paired_session_does_not_cry_wolf() -> None:
    counts = _paired_counts(1.0, 0.30)
    assert counts["slower"] + counts["faster"] <= 3, counts  # <= 1%


def test_without_the_precision_gate_a_noisy_session_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twin of the test above: "significant and past the threshold" alone, as asv
    judges, calls noise a change several times as often."""
    monkeypatch.setattr("vpbench.analysis.verdicts.PRECISE", math.inf)
    counts = _paired_counts(1.0, 0.30)
    assert counts["slower"] + counts["faster"] > 6, counts


def test_a_precise_paired_session_finds_10_percent() -> None:
    counts = _paired_counts(1.10, 0.03)
    assert counts["slower"] >= 0.95 * 300 and counts["faster"] == 0, counts
