"""How a measured cost grows with the rows it works on, and what it will be at another size.

A cost ``y`` measured at several row counts ``n`` is fitted by weighted least squares to
each growth model ``y = a + b·g(n)`` (``a, b >= 0``): constant (``g = 0``), linear
(``g = n``) and n·log n (``g = n ln n``, sorts and index builds). A measurement's error is
relative (``sigma`` of its value) plus an absolute floor (the figure's resolution: timer
jitter, a page): ``s² = (sigma·y)² + floor²``. The constant is kept when the points agree
with it (chi-square, 95 %); otherwise every two-parameter model the points cannot tell
from the best one (chi-square within 4) stays plausible, and the prediction spans them all.
A prediction's interval adds the fit's uncertainty at the new size to one more
measurement's error, on a log scale (a cost is never negative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959964
"""two-sided 95 % of the normal distribution"""
_PLAUSIBLE_CHI2 = 4.0
"""a model whose chi-square is within this of the best one's fits about as well"""
_REWEIGHTS = 3
MIN_POOLED_DOF = 5


@dataclass(frozen=True)
class Point:
    """A cost measured once at ``rows``."""

    rows: float
    value: float


@dataclass(frozen=True)
class Noise:
    """The error of one measurement of a figure: ``sigma`` of its value, at least ``floor``."""

    sigma: float
    floor: float

    def sd(self, value: float) -> float:
        return math.hypot(self.sigma * value, self.floor)


def _basis(model: str, rows: np.ndarray) -> np.ndarray:
    if model == "linear":
        return rows
    if model == "n log n":
        grown: np.ndarray = rows * np.log(np.maximum(rows, 1.0))
        return grown
    return np.zeros_like(rows)


MODELS = ("constant", "linear", "n log n")


@dataclass(frozen=True)
class Growth:
    """One model fitted to the points: ``a + b·g(rows)``, with the fit's covariance."""

    model: str
    a: float
    b: float
    covariance: tuple[tuple[float, float], tuple[float, float]]
    chi2: float
    dof: int
    residuals: tuple[float, ...]
    """each point's relative residual, (measured - fitted) / fitted"""

    def at(self, rows: float) -> float:
        return self.a + self.b * float(_basis(self.model, np.array([float(rows)]))[0])

    def sd_at(self, rows: float) -> float:
        """The fit's standard error at ``rows`` (not a new measurement's)."""
        x = np.array([1.0, float(_basis(self.model, np.array([float(rows)]))[0])])
        return math.sqrt(max(float(x @ np.array(self.covariance) @ x), 0.0))


def fit(points: Sequence[Point], model: str, noise: Noise) -> Growth:
    """``model`` fitted to ``points`` (non-negative ``a`` and ``b``), each point weighted by
    the error of the value the fit gives there (reweighted a few times)."""
    from scipy import optimize  # type: ignore[import-untyped, unused-ignore]  # slow to import

    rows = np.array([p.rows for p in points], dtype=float)
    values = np.array([p.value for p in points], dtype=float)
    design = np.column_stack([np.ones_like(rows), _basis(model, rows)])
    if model == "constant":
        design = design[:, :1]
    fitted = values.copy()
    for _ in range(_REWEIGHTS):
        sd = np.array([noise.sd(max(v, 0.0)) for v in fitted])
        coef, _ = optimize.nnls(design / sd[:, None], values / sd)
        fitted = design @ coef
    sd = np.array([noise.sd(max(v, 0.0)) for v in fitted])
    weighted = design / sd[:, None]
    covariance = np.linalg.pinv(weighted.T @ weighted)
    if model == "constant":
        coef = np.array([coef[0], 0.0])
        covariance = np.array([[covariance[0, 0], 0.0], [0.0, 0.0]])
    chi2 = float(np.sum(((values - fitted) / sd) ** 2))
    relative = tuple(
        float((v - f) / f) if f > 0 else 0.0 for v, f in zip(values, fitted, strict=True)
    )
    return Growth(
        model=model,
        a=float(coef[0]),
        b=float(coef[1]),
        covariance=(
            (float(covariance[0, 0]), float(covariance[0, 1])),
            (float(covariance[1, 0]), float(covariance[1, 1])),
        ),
        chi2=chi2,
        dof=len(points) - design.shape[1],
        residuals=relative,
    )


def plausible_fits(points: Sequence[Point], noise: Noise) -> tuple[Growth, ...]:
    """The models the points allow: the constant alone when they agree with it, else every
    growing model that fits about as well as the best."""
    from scipy import stats  # type: ignore[import-untyped, unused-ignore]  # slow to import

    constant = fit(points, "constant", noise)
    if constant.chi2 <= stats.chi2.ppf(0.95, max(constant.dof, 1)):
        return (constant,)
    growing = [fit(points, model, noise) for model in MODELS[1:]]
    best = min(g.chi2 for g in growing)
    return tuple(g for g in growing if g.chi2 <= best + _PLAUSIBLE_CHI2)


@dataclass(frozen=True)
class Predicted:
    """A cost predicted at ``rows``: the value, its 95 % interval and the models behind it."""

    rows: float
    value: float
    low: float
    high: float
    models: tuple[str, ...]
    fits: tuple[Growth, ...]

    @property
    def model(self) -> str:
        return " ~ ".join(self.models)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def predict(points: Sequence[Point], rows: float, noise: Noise) -> Predicted:
    """The cost at ``rows`` by every plausible model: their mean weighted by how well each
    fits (``exp(-chi2/2)``), and an interval holding each one's 95 % interval for a new
    measurement there."""
    fits = plausible_fits(points, noise)
    lows, highs, values = [], [], []
    for growth in fits:
        value = max(growth.at(rows), 0.0)
        sd = math.hypot(growth.sd_at(rows), noise.sd(value))
        values.append(value)
        if value > sd:  # a log-normal interval: relative, never below zero
            spread = math.exp(Z_95 * sd / value)
            lows.append(value / spread)
            highs.append(value * spread)
        else:
            lows.append(max(value - Z_95 * sd, 0.0))
            highs.append(value + Z_95 * sd)
    weights = [math.exp(-(g.chi2 - min(f.chi2 for f in fits)) / 2) for g in fits]
    return Predicted(
        rows=rows,
        value=sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights),
        low=min(lows),
        high=max(highs),
        models=tuple(g.model for g in fits),
        fits=fits,
    )


def pooled_noise(fits: Sequence[Growth], prior: Noise) -> Noise:
    """``prior`` with its relative error scaled up when the points scatter around their fits
    more than it allows (chi-square per degree of freedom, pooled over every figure that
    had points to spare, at least ``MIN_POOLED_DOF`` of them: one or two say little, and a
    constant kept *because* it fitted would scale every other figure's error up and hide
    their growth); never scaled down."""
    dof = sum(g.dof for g in fits if g.dof > 0)
    if dof < MIN_POOLED_DOF:
        return prior
    scale = math.sqrt(max(sum(g.chi2 for g in fits if g.dof > 0) / dof, 1.0))
    return Noise(prior.sigma * scale, prior.floor)
