"""What each step of a migration series will cost at production size, from runs of the same
series at two or more smaller sizes.

Each figure a step document records (the duration of ``up`` at rest, how long it held each
lock that blocks the app, the longest stall of the live app, its WAL, the bytes of each
relation it added) is fitted against the rows of the tables the step touched
(``analysis.growth``) and predicted, with an interval, at the production size of those
tables. A step whose predicted stall or blocking lock exceeds its stall budget is flagged.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from vpbench.analysis.growth import Noise, Point, Predicted, plausible_fits, pooled_noise
from vpbench.analysis.growth import predict as predict_growth
from vpbench.errors import UsageError
from vpbench.migrations.locking import DEFAULT_LOCKS, LockPolicy
from vpbench.migrations.touched import blocks_the_app, lock_mode, lock_relation
from vpbench.results.documents import read_shaped
from vpbench.results.shapes import StepShape, SummaryShape
from vpbench.server.table_statistics import read_table_estimates

Unit = Literal["s", "B"]
Family = Literal["time", "stall", "bytes"]

NOISE: dict[Family, Noise] = {
    "time": Noise(sigma=0.15, floor=0.005),
    "stall": Noise(sigma=0.5, floor=0.05),
    "bytes": Noise(sigma=0.03, floor=8192.0),
}
"""a single measurement's error before the series says otherwise: a time on a shared
machine within ±15 % (and 5 ms of timer and scheduling jitter); a stall of the live app
within ±50 % (and the lock sampler's 50 ms: it depends on when the app's requests land
in the migration's lock window); WAL and relation bytes within ±3 % (and a page)"""


DEFAULT_BUDGET_MS = 1000.0
FAR = 30.0
"""a prediction this many times beyond the largest size measured is marked as a lower bound"""
CUT_SHARE = 0.95
"""a stall this close to the traffic's statement_timeout was ended by it"""

Verdict = Literal["over", "may exceed", "within"]


@dataclass(frozen=True)
class Measured:
    """One figure of one step as a run measured it."""

    key: str
    label: str
    unit: Unit
    value: float
    downtime: bool
    """a stall of the app, or a lock it waits for: the figure its budget judges"""
    family: Family = "time"
    """whose measurement error it has"""
    cut: bool = False
    """cut short: the value is only a lower bound (a stall as long as the app's requests
    may wait, which its statement_timeout ends)"""


class Held(Protocol):
    """A lock a step held: as ``apply_step`` observed it, or as its document stores it."""

    @property
    def lock(self) -> str: ...
    @property
    def from_s(self) -> float: ...
    @property
    def until_s(self) -> float: ...


def longest_blocking_holds(holds: Iterable[Held], tables: Container[str]) -> dict[str, float]:
    """Lock -> its longest hold in seconds, of the locks in ``holds`` that block the app,
    on ``tables`` (those the step touched: the app uses none the step made; an index's
    lock comes with its table's)."""
    held: dict[str, float] = {}
    for hold in holds:
        if blocks_the_app(hold.lock) and lock_relation(hold.lock) in tables:
            held[hold.lock] = max(held.get(hold.lock, 0.0), hold.until_s - hold.from_s)
    return held


def measured_figures(step: StepShape) -> list[Measured]:
    """The figures of ``step``'s document that a prediction fits."""
    figures = [Measured("duration", "duration at rest", "s", step.up_seconds, False)]
    held = longest_blocking_holds(step.lock_holds, step.touched)
    figures += [
        Measured(f"lock {lock}", f"{lock_mode(lock)} on {lock_relation(lock)}", "s", s, True)
        for lock, s in sorted(held.items())
    ]
    if step.availability is not None:
        stall_ms = max((b.ms for b in step.availability.blocked.values() if b), default=0.0)
        timeout_ms = (step.metadata.options.get("traffic") or {}).get("timeout_ms")
        cut = timeout_ms is not None and stall_ms >= CUT_SHARE * timeout_ms
        figures.append(Measured("stall", "longest stall of the app", "s", stall_ms / 1000, True,
                                "stall", cut))  # fmt: skip
    if step.up_wal_bytes is not None:
        figures.append(
            Measured("wal", "WAL written", "B", float(step.up_wal_bytes), False, "bytes")
        )
    figures += [
        Measured(f"adds {c.name}", f"adds {c.kind} {c.name}", "B", c.bytes_after, False, "bytes")
        for c in step.costs
        if c.bytes_before == 0 and c.bytes_after > 0
    ]
    return figures


@dataclass(frozen=True)
class SeriesRun:
    """The step documents of one run of a series, by migration id, and where they came from."""

    folder: Path
    steps: Mapping[str, StepShape]
    complete: bool = True
    """False: the run stopped before its summary; ``steps`` are those it finished"""

    @property
    def rows(self) -> int:
        """Rows of every table the run's first step found: the run's size."""
        first = next(iter(self.steps.values()), None)
        return sum(first.checks.rows_before.values()) if first else 0


def read_series_run(folder: Path) -> SeriesRun:
    """The step documents of the ``steps`` results folder ``folder``: those its
    ``summary.json`` lists, or, in a run stopped before its summary (interrupted, say),
    every step document it finished."""
    summary = folder / "summary.json"
    if summary.is_file():
        shaped = read_shaped(summary)
        assert isinstance(shaped, SummaryShape)
        paths = [folder / row.document for row in shaped.steps]
    else:
        paths = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
        if not paths:
            raise UsageError("not a steps results folder (no summary.json, no step "
                             "document)", path=folder)  # fmt: skip
    steps: dict[str, StepShape] = {}
    for path in paths:
        step = read_shaped(path)
        if not isinstance(step, StepShape):
            raise UsageError(f"{path.name} is not a step document", path=folder)
        steps[step.migration.id] = step
    return SeriesRun(folder, steps, complete=summary.is_file())


@dataclass(frozen=True)
class FigurePrediction:
    key: str
    label: str
    unit: Unit
    downtime: bool
    points: tuple[Point, ...]
    """measured, one per run: (rows the step touched, value)"""
    predicted: Predicted | None
    """None: measured at one size only"""
    measured: float | None = None
    """the value measured at the predicted size (``--against``; None where cut short)"""
    note: str = ""
    """why it is not predicted"""
    beyond: str = ""
    """what happens at the predicted size that no run saw, making it a lower bound"""
    bound: str = ""
    """what caps the interval where the fit alone would reach further"""

    @property
    def error(self) -> float | None:
        """predicted / measured - 1"""
        if self.predicted is None or not self.measured:
            return None
        return self.predicted.value / self.measured - 1

    @property
    def reach(self) -> float | None:
        """How far beyond the largest size measured the prediction goes (production rows /
        the largest run's); None when not predicted or nothing was measured growing."""
        largest = max((p.rows for p in self.points), default=0.0)
        if self.predicted is None or largest <= 0:
            return None
        return self.predicted.rows / largest

    @property
    def far(self) -> bool:
        """Predicted more than ``FAR`` times beyond the largest size measured, where what
        only happens at size (a table outgrowing memory, a sort spilling) is unseen."""
        return (self.reach or 0) > FAR and self.predicted is not None and (
            self.predicted.models != ("constant",))  # fmt: skip

    @property
    def caveat(self) -> str:
        """Why the prediction is only a lower bound, if it is."""
        if self.beyond:
            return self.beyond
        return f"{self.reach:.0f}x the largest run: a lower bound" if self.far else ""


@dataclass(frozen=True)
class StepPrediction:
    migration: str
    title: str
    touched: Mapping[str, float]
    """the tables the step touched and their rows at the production size"""
    scaled: tuple[str, ...]
    """tables of ``touched`` without a production count: scaled like the others"""
    rows: float
    figures: tuple[FigurePrediction, ...]
    budget_ms: float
    budget_source: str
    missing: str = ""
    """why the step is not predicted (no production size for its tables)"""

    @property
    def worst(self) -> FigurePrediction | None:
        """The downtime figure predicted longest."""
        judged = [f for f in self.figures if f.downtime and f.predicted is not None]
        return max(judged, key=lambda f: f.predicted.value if f.predicted else 0, default=None)

    @property
    def verdict(self) -> Verdict | None:
        """over: a predicted downtime's whole interval is above the budget; may exceed: an
        interval reaches past it; None: nothing the budget judges was predicted."""
        judged = [f.predicted for f in self.figures if f.downtime and f.predicted is not None]
        if not judged:
            return None
        budget_s = self.budget_ms / 1000
        if any(p.low > budget_s for p in judged):
            return "over"
        return "may exceed" if any(p.high > budget_s for p in judged) else "within"


@dataclass(frozen=True)
class SeriesPrediction:
    runs: tuple[SeriesRun, ...]
    production: str
    """where the production size came from"""
    steps: tuple[StepPrediction, ...]
    noise: Mapping[Family, Noise]
    """the error of one measurement of each family, as the series' scatter showed it"""

    @property
    def over_budget(self) -> tuple[StepPrediction, ...]:
        return tuple(s for s in self.steps if s.verdict == "over")


def predict_series(
    runs: Sequence[SeriesRun],
    production_rows: Mapping[str, float],
    production: str,
    *,
    max_stall_ms: float | None = None,
    measured: SeriesRun | None = None,
) -> SeriesPrediction:
    """Every step the runs share, predicted at ``production_rows`` (table -> rows; a step's
    tables without a count are scaled like its tables with one); ``measured``, a run at
    that size, gives each prediction's error."""
    check_series(runs)
    ids = [m for m in runs[0].steps if all(m in run.steps for run in runs)]
    series = {m: _measurements(runs, m) for m in ids}
    noise = {
        family: pooled_noise(
            [
                min(plausible_fits(found.points, prior), key=lambda g: g.chi2)
                for m in ids
                for found in series[m].values()
                if found.figure.family == family and found.sizes > 1
            ],
            prior,
        )
        for family, prior in NOISE.items()
    }
    steps = []
    for m in ids:
        largest = max((run.steps[m] for run in runs), key=lambda s: sum(s.touched.values()))
        there = measured.steps.get(m) if measured is not None else None
        size = (
            _ProductionSize(dict(there.touched))
            if there is not None
            else _production_size(largest.touched, production_rows)
        )
        at_size = {f.key: f.value for f in measured_figures(there) if not f.cut} if there else {}
        budget = _budget(largest, max_stall_ms)
        found = _step(largest, series[m], size, noise, budget, at_size)
        figures = _with_lock_wait_bound([run.steps[m] for run in runs], found.figures)
        steps.append(replace(found, figures=figures))
    return SeriesPrediction(tuple(runs), production, tuple(steps), noise)


def check_series(runs: Sequence[SeriesRun]) -> None:
    """Refuse runs that are not of one series at two sizes or more."""
    first = runs[0]
    for run in runs[1:]:
        shared = set(first.steps) & set(run.steps)
        if not shared:
            raise UsageError(f"{run.folder} and {first.folder} share no migration: "
                             "runs of different series")  # fmt: skip
        for migration in sorted(shared):
            a, b = first.steps[migration].migration, run.steps[migration].migration
            if a.checksum != b.checksum:
                raise UsageError(
                    f"{migration} differs between {first.folder} and {run.folder} (checksum "
                    f"{a.checksum} against {b.checksum}): runs of different series"
                )
    if len({run.rows for run in runs}) < 2:
        raise UsageError(
            f"every run is the same size ({first.rows:,} rows): a growth needs runs at two "
            "sizes or more (profiles, or copies of other sizes)"
        )


@dataclass(frozen=True)
class _Measurements:
    """One figure of one step across the runs."""

    figure: Measured
    """as the first run measured it (its key, label, unit)"""
    points: tuple[Point, ...]
    """the runs' values, those cut short left out"""
    cut: int = 0
    """runs whose value was cut short"""

    @property
    def sizes(self) -> int:
        return len({p.rows for p in self.points})


def _measurements(runs: Sequence[SeriesRun], migration: str) -> dict[str, _Measurements]:
    first: dict[str, Measured] = {}
    points: dict[str, list[Point]] = {}
    cut: dict[str, int] = {}
    for run in runs:
        step = run.steps[migration]
        rows = float(sum(step.touched.values()))
        for figure in measured_figures(step):
            first.setdefault(figure.key, figure)
            found = points.setdefault(figure.key, [])
            if figure.cut:
                cut[figure.key] = cut.get(figure.key, 0) + 1
            else:
                found.append(Point(rows, figure.value))
    return {key: _Measurements(first[key], tuple(p), cut.get(key, 0)) for key, p in points.items()}


@dataclass(frozen=True)
class _ProductionSize:
    touched: dict[str, float]
    """the step's tables at production size"""
    scaled: tuple[str, ...] = ()
    missing: str = ""


def _production_size(
    measured: Mapping[str, int], production_rows: Mapping[str, float]
) -> _ProductionSize:
    """The touched tables' production rows: those given, the others scaled by the factor
    the given ones grew by; none when no table of the step was given."""
    given = {t: production_rows[t] for t in measured if t in production_rows}
    if measured and not given:
        return _ProductionSize({}, missing=f"no production size for {', '.join(measured)}")
    factor = sum(given.values()) / max(sum(measured[t] for t in given), 1)
    scaled = tuple(t for t in measured if t not in given)
    return _ProductionSize({t: given.get(t, measured[t] * factor) for t in measured}, scaled)


def _with_checkpoints(
    step: StepShape, figures: tuple[FigurePrediction, ...]
) -> tuple[FigurePrediction, ...]:
    """``figures``, its times and WAL marked as lower bounds where the step is predicted to
    write more WAL than ``max_wal_size`` and no run did: checkpoints then start inside the
    step, and every page it touches again writes a full-page image again. Where a run did,
    its times know it, but not its WAL: the images repeat with every checkpoint the step
    spans, for pages all over indexes that grow too, faster than any fit of the runs (on
    ``large``, 0001 and 0005 wrote 1.7x and 1.9x the WAL fitted on medium and smaller)."""
    setting = str(step.metadata.postgres.settings.get("max_wal_size") or "")
    limit = _setting_bytes(setting)
    wal = next((f for f in figures if f.key == "wal" and f.predicted is not None), None)
    if limit is None or wal is None or wal.predicted is None or wal.predicted.value <= limit:
        return figures
    if any(p.value > limit for p in wal.points):
        why = (f"more WAL than max_wal_size ({setting}): each checkpoint inside the step "
               "writes the pages it touches whole again, which grows faster than the fit; "
               "a lower bound")  # fmt: skip
        return tuple(replace(f, beyond=why) if f.key == "wal" else f for f in figures)
    why = f"more WAL than max_wal_size ({setting}), which no run wrote: a lower bound"
    return tuple(replace(f, beyond=why) if f.unit == "s" or f.key == "wal" else f for f in figures)


def _with_lock_wait_bound(
    runs: Sequence[StepShape], figures: tuple[FigurePrediction, ...]
) -> tuple[FigurePrediction, ...]:
    """``figures``, the stall's interval stopped where the lock queue stops a wait: a request
    of the app waits behind a lock the migration is queued for at most its lock_timeout,
    then behind a lock it holds at most that hold, so never longer than the lock_timeout
    plus the longest blocking hold predicted (and the lock sampler's period). Applied only
    where every run's stall stayed within that sum at its size: a stall from anything else
    (a row lock held by a long transaction, say) leaves the fit as it is."""
    stall = next((f for f in figures if f.key == "stall" and f.predicted is not None), None)
    holds = [f.predicted for f in figures if f.key.startswith("lock ")]
    if stall is None or stall.predicted is None or None in holds:
        return figures
    limits = [_lock_wait_limit_s(step) for step in runs]
    for step, limit in zip(runs, limits, strict=True):
        measured = {f.key: f.value for f in measured_figures(step)}
        held = max((v for k, v in measured.items() if k.startswith("lock ")), default=0.0)
        if limit is None or measured.get("stall", 0.0) > limit + held:
            return figures
    limit = max(x for x in limits if x is not None)
    held = max((p.high for p in holds if p is not None), default=0.0)
    bound = limit + held
    p = stall.predicted
    if p.high <= bound:
        return figures
    clipped = replace(p, value=min(p.value, bound), low=min(p.low, bound), high=bound)
    why = (f"at most the lock_timeout and the sampler's period, {limit:.2f} s, plus the "
           f"longest blocking hold, {held:.2f} s")  # fmt: skip
    return tuple(replace(f, predicted=clipped, bound=why) if f is stall else f for f in figures)


def _lock_wait_limit_s(step: StepShape) -> float | None:
    """The lock_timeout ``step`` was rehearsed under traffic with (at most half its stall
    budget) plus the lock sampler's period; None when it was not rehearsed."""
    options = step.metadata.options
    traffic = options.get("traffic")
    if not traffic:
        return None
    budget = step.migration.max_stall_ms or options.get("max_stall_ms") or DEFAULT_BUDGET_MS
    timeout_ms = (options.get("locks") or {}).get("timeout_ms", DEFAULT_LOCKS.timeout_ms)
    locks = LockPolicy(timeout_ms=int(timeout_ms))
    return (locks.within(float(budget)).timeout_ms + float(traffic.get("sample_ms", 0))) / 1000


_UNITS = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _setting_bytes(setting: str) -> float | None:
    """``1GB`` as bytes (PostgreSQL's memory units); None for what it cannot read."""
    match = re.fullmatch(r"(\d+)\s*(kB|MB|GB|TB)?", setting.strip())
    if match is None:
        return None
    return int(match[1]) * _UNITS.get(match[2] or "", 1)


def _note(found: _Measurements) -> str:
    """Why a figure is not predicted, if it is not."""
    if found.sizes > 1:
        return ""
    if found.cut:
        return (f"cut short at {found.cut} size(s) by the app's statement_timeout: "
                "only a lower bound there")  # fmt: skip
    return "measured at one size only"


def _budget(step: StepShape, max_stall_ms: float | None) -> tuple[float, str]:
    """The stall budget a step is judged by, and where it came from."""
    if max_stall_ms is not None:
        return max_stall_ms, "--max-stall"
    if step.migration.max_stall_ms is not None:
        return step.migration.max_stall_ms, "its max_stall"
    return DEFAULT_BUDGET_MS, "the default"


def _step(
    step: StepShape,
    series: Mapping[str, _Measurements],
    size: _ProductionSize,
    noise: Mapping[Family, Noise],
    budget: tuple[float, str],
    at_size: Mapping[str, float],
) -> StepPrediction:
    rows = float(sum(size.touched.values()))
    figures = _with_checkpoints(step, tuple(
        FigurePrediction(
            key=key,
            label=found.figure.label,
            unit=found.figure.unit,
            downtime=found.figure.downtime,
            points=found.points,
            predicted=(
                predict_growth(found.points, rows, noise[found.figure.family])
                if found.sizes > 1 and not size.missing
                else None
            ),
            measured=at_size.get(key),
            note=_note(found),
        )
        for key, found in series.items()
    ))  # fmt: skip
    return StepPrediction(
        migration=step.migration.id,
        title=step.migration.title,
        touched=size.touched,
        scaled=size.scaled,
        rows=rows,
        figures=figures,
        budget_ms=budget[0],
        budget_source=budget[1],
        missing=size.missing,
    )


@dataclass(frozen=True)
class ProductionSize:
    """Where the new migrations are predicted: rows per table (``--rows``), or a server
    whose catalog estimates give them (``--production-dsn``, read-only)."""

    rows: Mapping[str, float] = field(default_factory=dict)
    dsn: str | None = None
    option: str = "--production-dsn"
    """the option that named ``dsn``"""

    def read(self, tables: Sequence[str]) -> tuple[dict[str, float], str]:
        """The rows of ``tables`` (only those given, with ``rows``) and where they came from."""
        if self.dsn is None:
            return dict(self.rows), ", ".join(f"{t}={n:,.0f}" for t, n in self.rows.items())
        found = read_table_estimates(self.dsn, tables, self.option)
        return found.rows, f"catalog estimates of {found.server}"


def series_tables(runs: Sequence[SeriesRun]) -> list[str]:
    """Every table a step of ``runs`` touched."""
    return sorted({t for run in runs for step in run.steps.values() for t in step.touched})


def check_rows(runs: Sequence[SeriesRun], production_rows: Mapping[str, float]) -> None:
    """Refuse a production row count for a table no step of the series touched."""
    touched = series_tables(runs)
    for table in production_rows:
        if table not in touched:
            known = ", ".join(touched) or "none"
            raise UsageError(f"no step of the series touched table {table!r}; "
                             f"the tables it touched: {known}")  # fmt: skip
