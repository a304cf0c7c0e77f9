"""vpbench.analysis.changepoint on seeded synthetic nightly series with known steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from vpbench.analysis.changepoint import ChangePoint, detect_change_points

SEEDS = range(200)


def nightly(
    seed: int, size: int, *, steps: Sequence[tuple[int, float]] = (), cv: float = 0.05
) -> np.ndarray:
    """A 100 ms level with lognormal noise; each (index, factor) step multiplies the rest."""
    level = np.full(size, 100.0)
    for index, factor in steps:
        level[index:] *= factor
    return level * np.exp(np.random.default_rng(seed).normal(0.0, cv, size))


def indices(found: list[ChangePoint]) -> list[int]:
    return [change.index for change in found]


@pytest.mark.parametrize("seed", range(10))
def test_flat_series_has_no_change_point(seed: int) -> None:
    assert detect_change_points(nightly(seed, 30).tolist()) == []


@pytest.mark.parametrize(("size", "cv"), [(30, 0.05), (100, 0.05), (30, 0.15), (100, 0.15)])
def test_flat_series_false_positive_rate(size: int, cv: float) -> None:
    # Without the search correction, 42 % of the 100-night CV-15 % series were flagged.
    flagged = sum(bool(detect_change_points(nightly(seed, size, cv=cv).tolist())) for seed in SEEDS)
    assert flagged <= 0.01 * len(SEEDS)


def test_long_flat_series_has_no_change_point() -> None:
    for seed in range(5):
        assert detect_change_points(nightly(seed, 300).tolist()) == []


def found_near(found: list[ChangePoint], expected: Sequence[int]) -> bool:
    """Every expected step was found, give or take one night."""
    return all(any(abs(change.index - index) <= 1 for change in found) for index in expected)


def test_single_step_is_found() -> None:
    exactly_one = 0
    for seed in SEEDS:
        found = detect_change_points(nightly(seed, 30, steps=[(17, 1.3)]).tolist())
        assert found_near(found, [17]), (seed, found)
        step = next(change for change in found if abs(change.index - 17) <= 1)
        assert step.ratio == pytest.approx(1.3, rel=0.1)
        assert step.ratio == pytest.approx(step.after / step.before)
        assert step.before == pytest.approx(100.0, rel=0.1)
        assert step.p_value < 0.01
        exactly_one += len(found) == 1
    # A noise realisation can hold a real-looking second step: measured 198 of 200.
    assert exactly_one >= 0.97 * len(SEEDS)


@pytest.mark.parametrize(
    ("size", "steps"),
    [
        (45, [(15, 1.3), (30, 1 / 1.3)]),
        # No single split isolates five slow nights in sixty: both edges must be found.
        (60, [(30, 1.3), (35, 1 / 1.3)]),
    ],
)
def test_step_up_then_down_are_both_found(size: int, steps: list[tuple[int, float]]) -> None:
    expected = [index for index, _ in steps]
    exactly_two = 0
    for seed in SEEDS:
        found = detect_change_points(nightly(seed, size, steps=steps).tolist())
        assert found_near(found, expected), (seed, found)
        exactly_two += len(found) == 2
        up, down = (
            next(change for change in found if abs(change.index - index) <= 1) for index in expected
        )
        assert up.ratio > 1.2 and down.ratio < 1 / 1.2
    assert exactly_two >= 0.97 * len(SEEDS)


def test_step_smaller_than_min_ratio_is_ignored() -> None:
    found_with_lower_ratio = 0
    for seed in SEEDS:
        values = nightly(seed, 40, steps=[(20, 1.05)], cv=0.01).tolist()
        assert detect_change_points(values) == []
        found_with_lower_ratio += indices(detect_change_points(values, min_ratio=1.03)) == [20]
    assert found_with_lower_ratio >= 0.95 * len(SEEDS)


def test_nan_values_are_skipped_and_indices_preserved() -> None:
    values = nightly(3, 30, steps=[(17, 1.3)]).tolist()
    for index in (2, 9, 16, 25):
        values[index] = float("nan")
    found = detect_change_points(values)
    assert indices(found) == [17]
    assert not np.isnan(found[0].before) and not np.isnan(found[0].after)


def test_nan_at_the_step_moves_it_to_the_next_kept_value() -> None:
    values = nightly(3, 30, steps=[(17, 1.3)]).tolist()
    values[17] = float("nan")
    assert indices(detect_change_points(values)) == [18]


@pytest.mark.parametrize(
    "values",
    [[], [100.0], [100.0, 130.0, 100.0, 130.0, 100.0], [float("nan")] * 20, [100.0] * 3 + [130.0]],
)
def test_too_short_series_has_no_change_point(values: list[float]) -> None:
    assert detect_change_points(values) == []


def test_constant_series_has_no_change_point() -> None:
    assert detect_change_points([100.0] * 30) == []


def test_is_deterministic() -> None:
    values = nightly(5, 80, steps=[(20, 1.4), (50, 0.8)], cv=0.08).tolist()
    assert detect_change_points(values) == detect_change_points(values)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="min_size"):
        detect_change_points([1.0] * 10, min_size=0)
    with pytest.raises(ValueError, match="min_ratio"):
        detect_change_points([1.0] * 10, min_ratio=0.9)
