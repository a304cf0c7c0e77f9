"""The growth fit on seeded synthetic costs with known answers: a constant stays constant, a
linear or n·log n cost is recognised and extrapolated, and the 95 % interval holds the
truth about 95 % of the time (not 50 %, not always by being huge)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vpbench.analysis.growth import Noise, Point, fit, plausible_fits, pooled_noise, predict

SIZES = (3_000.0, 100_000.0, 1_000_000.0)
LARGE = 10_000_000.0
TIME = Noise(sigma=0.15, floor=0.005)


def _linear(rows: float) -> float:
    return 0.004 + 2e-5 * rows


def _n_log_n(rows: float) -> float:
    return 0.004 + 2e-6 * rows * math.log(rows)


def _measured(cost: object, rng: np.random.Generator, sigma: float = 0.15) -> list[Point]:
    assert callable(cost)
    return [Point(n, float(cost(n)) * float(rng.lognormal(0, sigma))) for n in SIZES]


def test_a_catalog_only_cost_is_constant_not_scaled() -> None:
    points = [Point(3_000, 0.006), Point(100_000, 0.004), Point(1_000_000, 0.007)]
    predicted = predict(points, LARGE, TIME)
    assert predicted.models == ("constant",)
    assert predicted.value == pytest.approx(0.0057, abs=0.001)
    assert predicted.high < 0.05  # not 10x the largest measurement
    # the twin: the same values at the largest size times 100 grow
    grown = [*points[:2], Point(1_000_000, 0.7)]
    assert "constant" not in predict(grown, LARGE, TIME).models


def test_nothing_measured_predicts_nothing() -> None:
    predicted = predict([Point(3_000, 0.0), Point(100_000, 0.0)], LARGE, TIME)
    assert predicted.models == ("constant",) and predicted.value == 0.0
    assert predicted.low == 0.0 and predicted.high <= 3 * TIME.floor


def test_a_linear_cost_is_extrapolated_to_ten_times_the_largest_size() -> None:
    points = [Point(n, _linear(n)) for n in SIZES]
    predicted = predict(points, LARGE, TIME)
    assert "linear" in predicted.models
    assert predicted.contains(_linear(LARGE))
    assert predicted.value == pytest.approx(_linear(LARGE), rel=0.15)  # n log n fits nearly as well
    exact = fit(points, "linear", TIME)
    assert exact.b == pytest.approx(2e-5, rel=1e-3) and exact.chi2 < 1e-6


def test_n_log_n_is_told_from_linear_when_the_points_say_so() -> None:
    noiseless = Noise(sigma=0.01, floor=0.0001)
    points = [Point(n, _n_log_n(n)) for n in (1e3, 1e4, 1e5, 1e6, 1e7)]
    assert [g.model for g in plausible_fits(points, noiseless)] == ["n log n"]
    linear = [Point(p.rows, _linear(p.rows)) for p in points]
    assert [g.model for g in plausible_fits(linear, noiseless)] == ["linear"]


@pytest.mark.parametrize("cost", [_linear, _n_log_n])
def test_the_interval_holds_the_truth_about_95_percent_of_the_time(cost: object) -> None:
    rng = np.random.default_rng(7)
    runs = 300
    inside = 0
    widths = []
    for _ in range(runs):
        predicted = predict(_measured(cost, rng), LARGE, TIME)
        assert callable(cost)
        # the truth is one more measurement at that size, with its own error
        truth = float(cost(LARGE)) * float(rng.lognormal(0, 0.15))
        inside += predicted.contains(truth)
        widths.append(predicted.high / predicted.low)
    assert 0.90 <= inside / runs <= 1.0
    assert float(np.median(widths)) < 4  # informative, not a blanket


def test_too_little_noise_assumed_is_scaled_up_by_the_scatter() -> None:
    rng = np.random.default_rng(3)
    careless = Noise(sigma=0.01, floor=0.0001)
    fits = [min(plausible_fits(_measured(_linear, rng, 0.3), careless), key=lambda g: g.chi2)
            for _ in range(20)]  # fmt: skip
    pooled = pooled_noise(fits, careless)
    assert 0.1 < pooled.sigma < 0.6
    # the twin: points that fit exactly leave the assumed error as it is
    exact = [fit([Point(n, _linear(n)) for n in SIZES], "linear", careless)]
    assert pooled_noise(exact, careless) == careless


def test_one_constant_kept_because_it_fitted_does_not_widen_every_other_figure() -> None:
    """Found in a full-suite run on a loaded machine: a catalog-only step's two durations
    (kept constant at chi-square 3.3 on 1 degree of freedom) scaled the time error up 1.5x,
    and a table rewrite that doubled over 4x the rows then read as constant too."""
    scattered = fit([Point(4_000, 0.010), Point(32_000, 0.022)], "constant", TIME)
    assert scattered.dof == 1 and scattered.chi2 > 1
    assert pooled_noise([scattered], TIME) == TIME  # one degree of freedom says little
    rewrite = [Point(4_000, 0.091), Point(32_000, 0.171)]
    assert "constant" not in predict(rewrite, 96_000, TIME).models
