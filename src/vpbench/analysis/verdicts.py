"""Compare two latency samples: a ratio with a confidence interval, a p-value, a verdict.

Pure functions over arrays of milliseconds. On shared machines the median of one query can
drift by half between batches minutes apart, so timing alone only decides a verdict when
both samples come from one interleaved session; otherwise it needs a plan or buffer change.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from vpbench.errors import UsageError

Statistic = Literal["median", "mean", "min", "p90", "p95", "p99"]
Verdict = Literal["faster", "slower", "unchanged", "inconclusive"]

FloatArray = npt.NDArray[np.float64]
_Reducer = Callable[[FloatArray, int], FloatArray]

_STATISTICS: dict[str, _Reducer] = {
    "median": lambda x, axis: np.asarray(np.median(x, axis=axis), dtype=np.float64),
    "mean": lambda x, axis: np.asarray(np.mean(x, axis=axis), dtype=np.float64),
    "min": lambda x, axis: np.asarray(np.min(x, axis=axis), dtype=np.float64),
    "p90": lambda x, axis: np.asarray(np.percentile(x, 90, axis=axis), dtype=np.float64),
    "p95": lambda x, axis: np.asarray(np.percentile(x, 95, axis=axis), dtype=np.float64),
    "p99": lambda x, axis: np.asarray(np.percentile(x, 99, axis=axis), dtype=np.float64),
}
_THRESHOLD_SPEC = re.compile(r"^(?:(?P<stat>[a-z0-9]+)\s*:)?\s*(?P<num>[^%\s]+)\s*(?P<pct>%)?$")


def _samples(values: npt.ArrayLike) -> FloatArray:
    """The values as a flat float array, NaNs (missing samples) dropped."""
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[~np.isnan(array)]


@dataclass(frozen=True)
class Threshold:
    """The smallest change of one statistic worth reporting, e.g. ``p95:10%``."""

    statistic: Statistic
    fraction: float
    """0.05 means 5 %"""

    @classmethod
    def parse(cls, spec: str) -> Threshold:
        """``"p95:10%"``, ``"median:5%"``, ``"mean:0.1"`` or ``"5%"`` (median)."""

        def invalid(why: str) -> UsageError:
            return UsageError(f"invalid threshold {spec!r}: {why}; e.g. median:5% or p95:10%")

        match = _THRESHOLD_SPEC.match(spec.strip().lower())
        if match is None:
            raise invalid("expected [statistic:]number[%]")
        statistic = match["stat"] or "median"
        if statistic not in _STATISTICS:
            raise invalid(f"unknown statistic {statistic!r}, use one of {', '.join(_STATISTICS)}")
        try:
            number = float(match["num"])
        except ValueError:
            raise invalid(f"{match['num']!r} is not a number") from None
        fraction = number / 100 if match["pct"] else number
        if not math.isfinite(fraction) or fraction < 0:
            raise invalid("the change must be a non-negative number")
        if fraction >= 1:
            raise invalid("the change must be below 100%")
        return cls(cast(Statistic, statistic), fraction)

    def value(self, samples: npt.ArrayLike) -> float:
        """This statistic of the samples; NaN when there are none."""
        return _statistic_of(self.statistic, _samples(samples))

    def __str__(self) -> str:
        return f"{self.statistic}:{self.fraction * 100:g}%"


DEFAULT_THRESHOLD = Threshold("median", 0.05)
DEFAULT_ALPHA = 0.05
"""the significance level verdicts are judged at unless a reader asks for another"""


def _statistic_of(statistic: Statistic, samples: FloatArray) -> float:
    if samples.size == 0:
        return math.nan
    return float(_STATISTICS[statistic](samples, -1))


def statistic_ratio(base: npt.ArrayLike, new: npt.ArrayLike, statistic: Statistic) -> float:
    """statistic(new) / statistic(base), without an interval; NaN when a side is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _statistic_of(statistic, _samples(new)) / _statistic_of(statistic, _samples(base))


@dataclass(frozen=True)
class RatioEstimate:
    """statistic(new) / statistic(base) with its bootstrap confidence interval."""

    ratio: float
    low: float
    high: float
    confidence: float


BCA_MAX_SAMPLES = 5000
"""BCa's jackknife takes time and memory in n² (a 15-minute migration under live traffic on
``large``: ~180k requests, a 260 GB array); with more samples than this per side the
percentile interval is used, whose bias that many samples make negligible"""
BOOTSTRAP_BATCH = 100
"""resamples computed at once: memory in batch * n instead of resamples * n"""


def bootstrap_ratio(
    base: npt.ArrayLike,
    new: npt.ArrayLike,
    *,
    statistic: Statistic = "median",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """Ratio of the statistic of two independent samples, with a BCa bootstrap interval.

    Falls back to the percentile interval where BCa is undefined (ties, ``min``), and uses
    it alone above ``BCA_MAX_SAMPLES`` per side. The interval is NaN when either side has
    fewer than two samples. Deterministic for a given seed.
    """
    base_ms, new_ms = _samples(base), _samples(new)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _statistic_of(statistic, new_ms) / _statistic_of(statistic, base_ms)
    if base_ms.size < 2 or new_ms.size < 2:
        return RatioEstimate(ratio, math.nan, math.nan, confidence)
    reduce = _STATISTICS[statistic]

    def ratio_of(base_resample: FloatArray, new_resample: FloatArray, axis: int) -> FloatArray:
        return reduce(new_resample, axis) / reduce(base_resample, axis)

    from scipy import stats  # type: ignore[import-untyped, unused-ignore]  # slow to import

    low = high = math.nan
    methods: tuple[str, ...] = ("BCa", "percentile")
    if max(base_ms.size, new_ms.size) > BCA_MAX_SAMPLES:
        methods = ("percentile",)
    for method in methods:
        # BCa warns and returns NaN on degenerate data; that is what the fallback is for.
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (base_ms, new_ms),
                ratio_of,
                n_resamples=resamples,
                vectorized=True,
                axis=-1,
                confidence_level=confidence,
                method=method,
                batch=BOOTSTRAP_BATCH,
                rng=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if not (math.isnan(low) or math.isnan(high)):
            break
    return RatioEstimate(ratio, low, high, confidence)


def mann_whitney_p(base: npt.ArrayLike, new: npt.ArrayLike) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 when a side has < 2 samples or all are equal."""
    base_ms, new_ms = _samples(base), _samples(new)
    if base_ms.size < 2 or new_ms.size < 2:
        return 1.0
    if np.ptp(np.concatenate([base_ms, new_ms])) == 0:
        return 1.0
    from scipy import stats  # type: ignore[import-untyped, unused-ignore]  # slow to import

    return float(stats.mannwhitneyu(base_ms, new_ms, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class Judgement:
    """A verdict on new versus base and the one-sentence reason for it."""

    verdict: Verdict
    estimate: RatioEstimate
    p_value: float
    reason: str
    mde: float
    """minimum detectable effect: the smallest true change (0.12 = 12%) this measurement
    would have called slower or faster with 80% probability (NaN when unknown)"""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; NaN (unknown) becomes None."""
        estimate = self.estimate

        def known(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "verdict": self.verdict,
            "ratio": known(estimate.ratio),
            "ci_low": known(estimate.low),
            "ci_high": known(estimate.high),
            "confidence": estimate.confidence,
            "p_value": known(self.p_value),
            "mde": known(self.mde),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> Judgement:
        """The judgement ``to_dict`` wrote (None back to NaN)."""

        def number(key: str) -> float:
            value = stored.get(key)
            return math.nan if value is None else float(value)

        estimate = RatioEstimate(
            number("ratio"), number("ci_low"), number("ci_high"), float(stored["confidence"])
        )
        verdict = cast(Verdict, stored["verdict"])
        return cls(verdict, estimate, number("p_value"), str(stored["reason"]), number("mde"))


def judge(
    base: npt.ArrayLike,
    new: npt.ArrayLike,
    *,
    threshold: Threshold = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    paired_session: bool = False,
    plan_changed: bool | None = None,
    buffers_ratio: float | None = None,
    confounder: str | None = None,
    drift: RatioEstimate | None = None,
    seed: int = 0,
    resamples: int = 2000,
) -> Judgement:
    """Judge whether ``new`` is faster, slower or unchanged against ``base``.

    With r the ratio of ``threshold.statistic`` (new / base), [low, high] its bootstrap
    interval, p the Mann-Whitney p-value and f ``threshold.fraction``:

    - timing says *slower* when r > 1+f, p < alpha, low > 1, and either the interval is
      narrow (half-width at most 0.84 log(1+f), so that noise alone takes the estimate past
      1+f less than 1% of the time) or it lies wholly above 1+f; *faster* likewise below
      1/(1+f). Like asv's "significant and beyond the factor", with the precision gate so
      that a noisy measurement cannot cry wolf; a large change is found however noisy.
    - That is the verdict when ``paired_session`` (both samples from one interleaved
      session). Otherwise timing alone may be batch drift, so the verdict also needs a
      deterministic signal: ``plan_changed is True``, or ``buffers_ratio`` (new / base shared
      hit+read blocks) beyond the same threshold in the same direction; without one the
      verdict is *inconclusive*. ``confounder`` names something else that changed plans and
      buffers between the runs (``"VACUUM or ANALYZE of public.reflections"``): the
      deterministic signals then confirm nothing and the verdict is *inconclusive* too.
      ``drift`` is the machine's drift between the runs (``vpbench.analysis.drift``): the
      ratio is then the change beyond it (``new`` divided by the drift, the interval widened
      by the drift's own), so a uniformly faster machine cannot pass for a faster query.
    - *unchanged* when the whole interval lies within [1/(1+f), 1+f]; else *inconclusive*.
    - Empty input is *inconclusive* with a NaN ratio.
    """
    base_ms, new_ms = _samples(base), _samples(new)
    if drift is not None:
        new_ms = new_ms / drift.ratio
    estimate = bootstrap_ratio(
        base_ms, new_ms, statistic=threshold.statistic, resamples=resamples, seed=seed
    )
    if drift is not None:
        estimate = RatioEstimate(
            estimate.ratio,
            estimate.low * drift.ratio / drift.high,
            estimate.high * drift.ratio / drift.low,
            estimate.confidence,
        )
    p_value = mann_whitney_p(base_ms, new_ms)
    mde = minimum_detectable_effect(estimate, threshold)
    if base_ms.size == 0 or new_ms.size == 0:
        return Judgement("inconclusive", estimate, p_value, "no samples to compare", mde)
    up, down = 1 + threshold.fraction, 1 / (1 + threshold.fraction)
    signals = _signals(plan_changed, buffers_ratio)
    summary = _summary(threshold.statistic, estimate, p_value, signals)
    if drift is not None:
        summary += f", relative to the machine's drift {drift.ratio:.2f}x"
    timing = _timing_verdict(estimate, p_value, threshold, alpha)
    if timing is not None:
        if paired_session:
            return Judgement(timing, estimate, p_value, f"{summary}, paired session", mde)
        buffers_agree = buffers_ratio is not None and (
            buffers_ratio > up if timing == "slower" else buffers_ratio < down
        )
        if (plan_changed is True or buffers_agree) and confounder is None:
            return Judgement(timing, estimate, p_value, summary, mde)
        why = (
            f"{confounder} ran between the runs, so plan and buffer changes may come from "
            "that rather than from the change under test"
            if confounder and (plan_changed is True or buffers_agree)
            else "no plan or buffer change confirms it"
        )
        return Judgement(
            "inconclusive",
            estimate,
            p_value,
            f"{summary}; only noisy timing moved: runs not from one paired session and {why}",
            mde,
        )
    return _no_clear_change(estimate, p_value, threshold, summary, mde)


PRECISE = 0.84
"""A measurement is precise enough for a verdict on its estimate alone when its interval's
half-width (log scale) is at most this share of log(1+f): noise alone then pushes the
estimate past the threshold less than 1% of the time (0.84 = 1.96 / 2.33)."""


def _timing_verdict(
    estimate: RatioEstimate, p_value: float, threshold: Threshold, alpha: float
) -> Verdict | None:
    """Slower (faster) when the change is significant (p < alpha, interval excluding 1),
    the estimate lies beyond the threshold, and either the measurement is precise (see
    ``PRECISE``) or its whole interval lies beyond the threshold; None otherwise."""
    up, down = 1 + threshold.fraction, 1 / (1 + threshold.fraction)
    precise = is_precise(estimate, threshold)
    significant = p_value < alpha
    if (
        significant
        and estimate.ratio > up
        and (estimate.low > up or (precise and estimate.low > 1))
    ):
        return "slower"
    if (
        significant
        and estimate.ratio < down
        and (estimate.high < down or (precise and estimate.high < 1))
    ):
        return "faster"
    return None


def half_width(estimate: RatioEstimate) -> float:
    """Half the interval's width on the log scale (0.03: about ±3%); NaN when unknown."""
    if not (estimate.low > 0 and estimate.high > 0):
        return math.nan
    return (math.log(estimate.high) - math.log(estimate.low)) / 2


def is_precise(estimate: RatioEstimate, threshold: Threshold) -> bool:
    return half_width(estimate) <= PRECISE * math.log1p(threshold.fraction)


def _no_clear_change(
    estimate: RatioEstimate, p_value: float, threshold: Threshold, summary: str, mde: float
) -> Judgement:
    """Unchanged when the whole interval lies within the threshold, else inconclusive."""
    up, down = 1 + threshold.fraction, 1 / (1 + threshold.fraction)
    if down <= estimate.low and estimate.high <= up:
        return Judgement("unchanged", estimate, p_value, f"{summary}, within {threshold}", mde)
    return Judgement(
        "inconclusive", estimate, p_value, f"{summary}, not clearly beyond {threshold}", mde
    )


def _signals(plan_changed: bool | None, buffers_ratio: float | None) -> list[str]:
    signals = []
    if plan_changed is True:
        signals.append("plan changed")
    if buffers_ratio is not None:
        signals.append(f"buffers {buffers_ratio:.2f}x")
    return signals


def _summary(
    statistic: Statistic, estimate: RatioEstimate, p_value: float, signals: list[str]
) -> str:
    """Ratio, interval, p-value and deterministic signals, e.g. for the reason sentence."""
    parts = [
        f"{statistic} {estimate.ratio:.2f}x ({estimate.confidence * 100:g}% CI "
        f"{estimate.low:.2f}\u2013{estimate.high:.2f})",
        f"p={p_value:.2g}",
        *signals,
    ]
    return ", ".join(parts)


def paired_ratio(
    base: npt.ArrayLike,
    new: npt.ArrayLike,
    clusters: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[RatioEstimate, float, int] | None:
    """The median of the paired ratios ``new[i] / base[i]`` with a cluster-bootstrap interval.

    Samples with the same ``clusters`` value (their round) share that round's machine state,
    so whole clusters are resampled, not single pairs. Returns the estimate, the two-sided
    p-value of "no change" (twice the share of bootstrap medians on the other side of 1) and
    the number of clusters; None with fewer than two pairs or two clusters."""
    base_ms = np.asarray(base, dtype=np.float64).ravel()
    new_ms = np.asarray(new, dtype=np.float64).ravel()
    ids = np.asarray(clusters).ravel()
    count = min(base_ms.size, new_ms.size, ids.size)
    base_ms, new_ms, ids = base_ms[:count], new_ms[:count], ids[:count]
    with np.errstate(invalid="ignore"):
        valid = (base_ms > 0) & (new_ms > 0)
    logs, ids = np.log(new_ms[valid] / base_ms[valid]), ids[valid]
    labels, inverse = np.unique(ids, return_inverse=True)
    if logs.size < 2 or labels.size < 2:
        return None
    # One row per cluster, padded with NaN, so the bootstrap is a single fancy index.
    sizes = np.bincount(inverse)
    grid = np.full((labels.size, int(sizes.max())), np.nan)
    order = np.argsort(inverse, kind="stable")
    offsets = np.arange(logs.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    grid[inverse[order], offsets] = logs[order]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, labels.size, size=(resamples, labels.size))
    medians = np.nanmedian(grid[picks].reshape(resamples, -1), axis=1)
    centre = float(np.median(logs))
    # With few clusters the bootstrap spread is too narrow (A/A intervals excluded 1 in
    # 7.5-11% of seeded 10-round sessions instead of 5%): widen it by the small-sample
    # factors sqrt(k/(k-1)) and t(k-1)/z, which brings that back to 4-5% (tests).
    medians = centre + _few_clusters_factor(labels.size, confidence) * (medians - centre)
    tail = (1 - confidence) / 2
    low, high = np.exp(np.quantile(medians, [tail, 1 - tail]))
    p_value = min(1.0, 2.0 * min(float(np.mean(medians <= 0)), float(np.mean(medians >= 0))))
    estimate = RatioEstimate(float(np.exp(centre)), float(low), float(high), confidence)
    return estimate, p_value, int(labels.size)


def _few_clusters_factor(clusters: int, confidence: float) -> float:
    from scipy import stats  # type: ignore[import-untyped, unused-ignore]  # slow to import

    tail = 0.5 + confidence / 2
    ratio = float(stats.t.ppf(tail, clusters - 1)) / _normal_quantile(tail)
    return math.sqrt(clusters / (clusters - 1)) * ratio


def judge_pairs(
    base: npt.ArrayLike,
    new: npt.ArrayLike,
    *,
    clusters: npt.ArrayLike | None = None,
    block: int | None = None,
    threshold: Threshold = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Judgement:
    """Judge a paired session using its pairing.

    ``base[i]`` and ``new[i]`` ran next to each other with the same parameters, in round
    ``clusters[i]`` (or, without ``clusters``, each run of ``block`` consecutive pairs is one
    round). The statistic is the median of the paired ratios (parameter-to-parameter and
    round-to-round variation cancel out); its interval comes from a cluster bootstrap over
    whole rounds, and p is twice the share of bootstrap medians on the other side of no
    change (see ``paired_ratio``). Verdict rules are those of ``judge`` with the threshold's
    fraction applied to this ratio.
    """
    size = min(np.asarray(base).size, np.asarray(new).size)
    if clusters is None:
        clusters = np.arange(size) // max(block or 1, 1)
    found = paired_ratio(base, new, clusters, confidence=confidence, resamples=resamples, seed=seed)
    if found is None:
        nan = RatioEstimate(math.nan, math.nan, math.nan, confidence)
        return Judgement("inconclusive", nan, 1.0, "too few paired samples", math.nan)
    estimate, p_value, rounds = found
    mde = minimum_detectable_effect(estimate, threshold)
    summary = (
        f"paired median ratio {estimate.ratio:.2f}x ({confidence:.0%} CI "
        f"{estimate.low:.2f}-{estimate.high:.2f}, {rounds} rounds), p={p_value:.3g}"
    )
    timing = _timing_verdict(estimate, p_value, threshold, alpha)
    if timing is not None:
        return Judgement(timing, estimate, p_value, summary, mde)
    return _no_clear_change(estimate, p_value, threshold, summary, mde)


MDE_POWER_Z = 0.8416
"""z of the power the minimum detectable effect is quoted at (80%)."""


def minimum_detectable_effect(estimate: RatioEstimate, threshold: Threshold) -> float:
    """The smallest true change (0.12 = 12%) this measurement would call slower (or faster)
    four times in five, given the width of its confidence interval.

    With h the interval's half-width on the log scale and the estimate normal with sd h/z
    (z = 1.96 at 95%): a precise measurement calls a true ratio r slower when its estimate
    passes 1+f, which happens with probability 0.8 when log r = log(1+f) + 0.84 h/z; an
    imprecise one needs its whole interval beyond 1+f: log r = log(1+f) + h + 0.84 h/z.
    NaN when the interval is unknown.
    """
    half = half_width(estimate)
    if math.isnan(half):
        return math.nan
    z = float(_normal_quantile(0.5 + estimate.confidence / 2))
    margin = half * MDE_POWER_Z / z + (0.0 if is_precise(estimate, threshold) else half)
    return (1 + threshold.fraction) * math.exp(margin) - 1


def _normal_quantile(probability: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(probability)
