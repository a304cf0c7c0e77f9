"""Two databases measured in one session, execution by execution (``steps`` and ``ab``).

Every timed execution on one side is paired with one on the other side that ran right
next to it, with the same parameters; the side that goes first alternates from pair to
pair and, balanced, from round to round. Drift of a shared machine then hits both members
of a pair alike and cancels in their ratio. A round runs each entry still being measured
at least ``repeat`` times on both sides, and as many more as fit in ``round_ms`` (after
``warmup`` untimed executions each); rounds are the clusters of the bootstrap that judges
the pairs (``vpbench.analysis.verdicts.judge_pairs``).

Rounds adapt to precision and to time, as pytest-benchmark's ``min_rounds``/``max_time``
do: every entry gets ``min_rounds`` rounds however long they take, and ``rounds`` while
the session is within ``budget_seconds``; after ``rounds`` rounds an entry stops as soon as
the 95% interval of its paired ratio lies within ±``precision``, the others go on until
``max_rounds`` or the budget. An entry whose pair takes longer than ``SLOW_PAIR_MS`` (a
legacy scan of a large table) runs one pair a round, warms up in the first round only and
is EXPLAINed once per side: the rounds carry its precision, its interval says how much,
and a second of work dwarfs what a warm-up evens out.
"""

from __future__ import annotations

import logging
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from vpbench.analysis.verdicts import paired_ratio
from vpbench.measure.plan import PlanSummary
from vpbench.measure.runner import (
    MAX_TIMEOUTS,
    EntryResult,
    ExplainRun,
    PreparedStatements,
    combine_explains,
    explain,
    explain_run,
    open_session,
)
from vpbench.server.target import error_message
from vpbench.workload.sampling import ParameterPool, ParameterStream
from vpbench.workload.spec import AppCallable, Query, Scenario, SqlText, Workload, resolve_callable

log = logging.getLogger(__name__)

SIDES = ("before", "after")
MAX_PAIRS = 200
"""pairs per entry and round at most"""
SLOW_PAIR_MS = 1000.0
"""a pair at least this long runs once a round, with no warm-up after the first round"""
RoundProgress = Callable[[int, int], None]
"""Called after each round with (rounds done, entries still being measured)."""


@dataclass(frozen=True)
class PairedOptions:
    rounds: int = 10
    """rounds every entry gets while the session is within ``budget_seconds``"""
    min_rounds: int = 3
    """rounds every entry gets however long they take"""
    max_rounds: int = 30
    repeat: int = 3
    """pairs per entry and round, at least"""
    round_ms: float = 200.0
    """an entry runs more pairs in a round, up to MAX_PAIRS, until they take this long: a
    sub-millisecond query needs hundreds of pairs to be known to within a few percent"""
    warmup: int = 1
    """untimed executions per entry, side and round"""
    explain: int = 3
    """EXPLAIN (ANALYZE, BUFFERS) runs per entry and side, in the first round"""
    timeout_ms: int = 30_000
    seed: int = 1
    precision: float = 0.03
    """stop an entry once its ratio's 95% interval lies within ±3% (precise enough for a
    verdict at a 5% threshold, see ``vpbench.analysis.verdicts.PRECISE``)"""
    budget_seconds: float = 60.0
    """no round starts after this, once every entry had ``min_rounds`` rounds"""
    app_layer: bool = False
    """also measure the application-layer versions (``video_page[app]``), pair by pair like
    the rest: the same Python on both sides, each on its own schema"""


@dataclass(frozen=True)
class PairedSession:
    """Both sides' entries, sample ``i`` of one side paired with sample ``i`` of the other."""

    before: tuple[EntryResult, ...]
    after: tuple[EntryResult, ...]
    rounds: int
    seconds: float


def balanced_orders(rounds: int, seed: int) -> list[tuple[str, str]]:
    """Which side runs first in each round: every pair of rounds holds one "before" first
    and one "after" first, in random order. The second run of a pair meets caches the first
    warmed (CPU, plan code), so an unbalanced order would favour a side."""
    shuffler = random.Random(seed)
    orders: list[tuple[str, str]] = []
    while len(orders) < rounds:
        pair = [("before", "after"), ("after", "before")]
        shuffler.shuffle(pair)
        orders += pair
    return orders[:rounds]


@contextmanager
def open_pair(
    conninfo: Mapping[str, str], order: tuple[str, str], timeout_ms: int, core: int | None
) -> Iterator[dict[str, psycopg.Connection[Any]]]:
    """A fresh session on each side, opened in ``order``, both running on ``core``.

    A backend that runs on the client's core answers a short query up to twice as fast as
    one on the other core, and keeps its core for as long as it lives; the backend started
    second lands on the busier core more often than not. When the server runs on this
    machine, both backends are pinned to one core away from the client's (``core``, from
    ``separate_cores``); elsewhere, fresh sessions every round, opened in the round's
    balanced order, turn placement into round-to-round noise that the bootstrap over
    rounds accounts for, instead of a bias for one side."""
    with ExitStack() as stack:
        connections = {
            state: stack.enter_context(open_session(conninfo[state], timeout_ms)) for state in order
        }
        if core is not None:
            for conn in connections.values():
                pin_backend(conn.info.backend_pid, core)
        yield connections


@contextmanager
def separate_cores() -> Iterator[int | None]:
    """Pin this process to its first core for the duration and yield the core the server
    processes are to share (its last one); None on a single core or without CPU affinity."""
    getter = getattr(os, "sched_getaffinity", None)
    cores = sorted(getter(0)) if getter else []
    if len(cores) < 2:
        yield None
        return
    os.sched_setaffinity(0, {cores[0]})
    try:
        yield cores[-1]
    finally:
        os.sched_setaffinity(0, set(cores))


def pin_backend(pid: int, core: int) -> bool:
    """Run server process ``pid`` on ``core`` when it is a PostgreSQL process of this
    machine that started in the last minute (a server in another PID namespace or on another
    host is left alone); False when it was not pinned."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        if b"postgres" not in command or uptime - started / os.sysconf("SC_CLK_TCK") > 60:
            return False
        os.sched_setaffinity(pid, {core})
    except (OSError, ValueError, IndexError):
        return False
    return True


class _StatementTimeoutError(Exception):
    pass


@dataclass
class _Side:
    conn: psycopg.Connection[Any]
    statements: PreparedStatements = field(default_factory=PreparedStatements)


@dataclass
class _Track:
    """What one entry has gathered on one side so far."""

    base: EntryResult
    chosen: list[tuple[str, SqlText]]
    samples: list[int] = field(default_factory=list)
    members: dict[str, list[int]] = field(default_factory=dict)
    explains: list[ExplainRun] = field(default_factory=list)
    plans: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, PlanSummary] = field(default_factory=dict)
    timeouts: int = 0
    error: str | None = None

    def result(self, rounds: list[int]) -> EntryResult:
        status = "error" if self.error else "timeout" if self.timeouts else "ok"
        single = self.base.kind == "query"
        return replace(
            self.base,
            status=status,
            error=self.error,
            samples_ns=tuple(self.samples),
            timeouts=self.timeouts,
            wall_seconds=sum(self.samples) / 1e9,
            explains=tuple(self.explains),
            plan=next(iter(self.plans.values()), None) if single else self.plans or None,
            plan_summaries=self.summaries,
            member_samples_ns={} if single else {k: tuple(v) for k, v in self.members.items()},
            rounds=tuple(rounds),
        )


class _PairedEntry:
    """One query or scenario as each side runs it (each side its own variants); with
    ``app``, its application-layer version (the same callable on both sides)."""

    def __init__(
        self,
        item: Query | Scenario,
        members: Sequence[Query],
        applied: dict[str, Sequence[str]],
        app: AppCallable | None = None,
    ) -> None:
        self.name = f"{item.name}[app]" if app else item.name
        self.app = app
        self.tracks: dict[str, _Track] = {}
        needed: set[str] = set()
        for state, migrations in applied.items():
            chosen = [(q.name, *q.sql_for(migrations)) for q in members]
            needed |= {p for _, _, sql in chosen for p in sql.params}
            variants = [f"{name}@{variant}" for name, variant, _ in chosen if variant]
            kind = "app" if app else "query" if isinstance(item, Query) else "scenario"
            base = EntryResult(
                self.name, kind, item.workload, item.path, item.target_ms, 1,
                variant=(item.app if app else chosen[0][1] if kind == "query"
                         else ", ".join(variants) or None),
                sql=chosen[0][2].source if kind == "query" else None,
            )  # fmt: skip
            self.tracks[state] = _Track(base, [(name, sql) for name, _, sql in chosen])
            self.tracks[state].members = {} if app else {name: [] for name, _, _ in chosen}
        self.needed = sorted(needed)
        self.rounds: list[int] = []

    @property
    def failed(self) -> bool:
        return any(t.error is not None or t.timeouts >= MAX_TIMEOUTS for t in self.tracks.values())

    def run(self, side: _Side, state: str, params: dict[str, Any]) -> tuple[int, dict[str, int]]:
        """Execute once; client nanoseconds for the whole entry and for each member."""
        members: dict[str, int] = {}
        began = time.perf_counter_ns()
        try:
            if self.app is not None:
                self.app(side.conn, params)
                return time.perf_counter_ns() - began, members
            for name, sql in self.tracks[state].chosen:
                start = time.perf_counter_ns()
                side.statements.execute(side.conn, sql, params)
                members[name] = time.perf_counter_ns() - start
        except psycopg.errors.QueryCanceled:
            raise _StatementTimeoutError from None
        return time.perf_counter_ns() - began, members

    def explain(self, side: _Side, state: str, params: dict[str, Any]) -> None:
        """EXPLAIN each member once (an application-layer version has no plan of its own)."""
        if self.app is not None:
            return
        track = self.tracks[state]
        runs = []
        for name, sql in track.chosen:
            document, summary = explain(side.conn, sql, params)
            track.plans.setdefault(name, document)
            track.summaries.setdefault(name, summary)
            runs.append(explain_run(summary))
        track.explains.append(runs[0] if len(runs) == 1 else combine_explains(runs))


def measure_paired(
    before: str,
    after: str,
    workloads: Sequence[Workload],
    pools: Mapping[str, dict[str, ParameterPool]],
    applied_before: Sequence[str],
    applied_after: Sequence[str],
    options: PairedOptions,
    *,
    progress: RoundProgress | None = None,
    before_round: Callable[[], None] | None = None,
) -> PairedSession:
    """Measure every query and scenario of ``workloads`` on both databases, pair by pair
    (their application-layer versions too with ``options.app_layer``). ``before_round`` runs
    before each round's sessions open (``vpbench.server.buffers.buffer_evictor``)."""
    began = time.perf_counter()
    conninfo = {"before": before, "after": after}
    applied = {"before": applied_before, "after": applied_after}
    entries: list[tuple[_PairedEntry, dict[str, ParameterPool]]] = []
    for workload in workloads:
        items: list[tuple[Query | Scenario, list[Query]]] = [
            (q, [q]) for q in workload.queries.values()
        ]
        items += [
            (s, [workload.queries[n] for n in s.queries]) for s in workload.scenarios.values()
        ]
        for item, members in items:
            entries.append((_PairedEntry(item, members, applied), pools[workload.name]))
            if options.app_layer and item.app:
                app = resolve_callable(item.app, item.path)
                entries.append((_PairedEntry(item, members, applied, app), pools[workload.name]))
    active = list(range(len(entries)))
    rounds = 0
    with separate_cores() as core:
        for number, order in enumerate(balanced_orders(options.max_rounds, options.seed)):
            if before_round:
                before_round()
            with open_pair(conninfo, order, options.timeout_ms, core) as connections:
                sides = {state: _Side(conn) for state, conn in connections.items()}
                for index in active:
                    entry, entry_pools = entries[index]
                    _one_round(entry, entry_pools, sides, order, number, options)
            rounds = number + 1
            active = [
                i
                for i in active
                if not entries[i][0].failed
                and not (rounds >= options.rounds and _precise(entries[i][0], options))
            ]
            if progress:
                progress(rounds, len(active))
            spent = time.perf_counter() - began
            least = min(options.min_rounds, options.rounds)
            if not active or (rounds >= least and spent >= options.budget_seconds):
                break
    log.info("paired session: %d rounds in %.1fs", rounds, time.perf_counter() - began)
    results = {
        state: tuple(e.tracks[state].result(e.rounds) for e, _ in entries) for state in SIDES
    }
    return PairedSession(results["before"], results["after"], rounds, time.perf_counter() - began)


def _one_round(
    entry: _PairedEntry,
    pools: dict[str, ParameterPool],
    sides: dict[str, _Side],
    order: tuple[str, str],
    number: int,
    options: PairedOptions,
) -> None:
    timed = ParameterStream(pools, entry.needed, options.seed, f"{entry.name}/round{number}")
    warm = ParameterStream(pools, entry.needed, options.seed, f"{entry.name}/warmup{number}")
    try:
        warm_ns = 0
        for _ in range(0 if _slow(entry) else options.warmup):
            params = warm.draw()
            for state in order:
                outcome = _try(entry, sides, state, params)
                warm_ns += outcome[0] if outcome else 0
        for pair in range(_pairs(entry, options, warm_ns)):
            params = timed.draw()
            states = order if pair % 2 == 0 else order[::-1]
            outcomes = {state: _try(entry, sides, state, params) for state in states}
            if all(o is not None for o in outcomes.values()):
                for state, outcome in outcomes.items():
                    assert outcome is not None
                    track = entry.tracks[state]
                    track.samples.append(outcome[0])
                    for name, ns in outcome[1].items():
                        track.members[name].append(ns)
                entry.rounds.append(number)
            if entry.failed:
                return
        if number == 0:
            stream = ParameterStream(pools, entry.needed, options.seed, f"{entry.name}/explain")
            for _ in range(min(options.explain, 1) if _slow(entry) else options.explain):
                params = stream.draw()
                for state in order:
                    try:
                        entry.explain(sides[state], state, params)
                    except psycopg.errors.QueryCanceled:
                        return  # EXPLAIN ran past the timeout: the timed samples stand
                    except psycopg.Error as exc:
                        entry.tracks[state].error = error_message(exc)
                        return
    except psycopg.Error:
        return  # recorded on the side that failed; the entry stops


def _pair_ms(entry: _PairedEntry) -> float:
    """The median pair's milliseconds so far (0 before the first pair)."""
    before, after = entry.tracks["before"].samples, entry.tracks["after"].samples
    if not before:
        return 0.0
    return (statistics.median(before) + statistics.median(after)) / 1e6


def _slow(entry: _PairedEntry) -> bool:
    """Whether the entry's pairs so far take ``SLOW_PAIR_MS`` or more."""
    return _pair_ms(entry) >= SLOW_PAIR_MS


def _pairs(entry: _PairedEntry, options: PairedOptions, warm_ns: int) -> int:
    """Pairs for this round: enough to fill ``round_ms``, judged by the pairs so far (or
    the warm-up), within [repeat, MAX_PAIRS]; one for a pair of ``SLOW_PAIR_MS`` or more."""
    pair_ms = _pair_ms(entry)
    if not pair_ms and warm_ns:
        pair_ms = warm_ns / 1e6 / max(options.warmup, 1)
    if not pair_ms:
        return options.repeat
    if pair_ms >= SLOW_PAIR_MS:
        return 1
    wanted = math.ceil(options.round_ms / pair_ms)
    return min(max(options.repeat, wanted), MAX_PAIRS)


def _try(
    entry: _PairedEntry, sides: dict[str, _Side], state: str, params: dict[str, Any]
) -> tuple[int, dict[str, int]] | None:
    """One execution; None (and a timeout counted) when statement_timeout cancelled it."""
    try:
        return entry.run(sides[state], state, params)
    except _StatementTimeoutError:
        entry.tracks[state].timeouts += 1
        return None
    except psycopg.Error as exc:
        entry.tracks[state].error = error_message(exc)
        raise


def _precise(entry: _PairedEntry, options: PairedOptions) -> bool:
    """Whether the entry's paired ratio is known to within ±precision (95% interval)."""
    found = paired_ratio(
        entry.tracks["before"].samples,
        entry.tracks["after"].samples,
        entry.rounds,
        resamples=500,
        seed=options.seed,
    )
    if found is None:
        return False
    estimate = found[0]
    half = (math.log(estimate.high) - math.log(estimate.low)) / 2
    return half <= math.log(1 + options.precision)
