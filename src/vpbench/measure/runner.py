"""Run a workload: warm-up, timed executions, EXPLAIN (ANALYZE, BUFFERS) runs, clients.

Client time is the wall time of ``execute`` + ``fetchall`` (``perf_counter_ns``), the way
the app sees it; server execution time, planning time, buffers and the plan come from
separate EXPLAIN runs, since EXPLAIN ANALYZE's instrumentation slows the query down. Every
statement runs under ``statement_timeout``; a timeout is recorded, not raised.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import pq

from vpbench.analysis.latency import LatencySummary, median, summarise_latencies
from vpbench.measure.plan import PlanSummary, summarise_plan
from vpbench.server.target import error_message, open_connection
from vpbench.workload.sampling import ParameterPool, ParameterStream, load_workload_pools
from vpbench.workload.spec import Query, Scenario, SqlText, Workload, resolve_callable

log = logging.getLogger(__name__)

MeasureProgress = Callable[[str, int, int], None]
"""Called with (entry name, executions done, executions planned)."""

EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
MAX_TIMEOUTS = 3
"""Stop timing an entry after this many statement timeouts: it is too slow, and that is known."""


@dataclass(frozen=True)
class RunOptions:
    warmup: int = 5
    repeat: int = 30
    explain: int = 5
    clients: int = 1
    timeout_ms: int = 10_000
    seed: int = 1
    max_time_s: float | None = 10.0
    """each entry's timed executions stop once they have taken this long (per client),
    after at least ``min_rounds``; its warm-ups and EXPLAIN runs likewise after their
    first (pytest-benchmark's ``max_time``). None: counts only"""
    min_rounds: int = 5

    def over_budget(self, began: float, done: int, minimum: int) -> bool:
        """Whether a loop that started at ``began`` and has run ``done`` executions should
        stop on the time budget (it has run ``minimum`` at least)."""
        if self.max_time_s is None or done < minimum:
            return False
        return time.perf_counter() - began >= self.max_time_s

    def executions(self) -> int:
        return self.warmup * self.clients + self.repeat * self.clients + self.explain


@dataclass(frozen=True)
class ExplainRun:
    """One EXPLAIN (ANALYZE, BUFFERS) execution (summed over a scenario's queries)."""

    execution_ms: float | None
    planning_ms: float | None
    shared_hit_blocks: int
    shared_read_blocks: int
    fingerprint: str


@dataclass(frozen=True)
class EntryResult:
    """The measurements of one query, scenario or application-layer version."""

    name: str
    kind: str
    """"query", "scenario" or "app" """
    workload: str
    path: str
    target_ms: float | None
    clients: int
    variant: str | None = None
    sql: str | None = None
    status: str = "ok"
    """"ok", "timeout" (some executions hit statement_timeout) or "error" """
    error: str | None = None
    samples_ns: tuple[int, ...] = ()
    timeouts: int = 0
    wall_seconds: float = 0.0
    explains: tuple[ExplainRun, ...] = ()
    plan: Any = None
    """the first EXPLAIN document, in full (a scenario: per query name)"""
    plan_summaries: dict[str, PlanSummary] = field(default_factory=dict)
    """per query name (one entry for a query)"""
    member_samples_ns: dict[str, tuple[int, ...]] = field(default_factory=dict)
    rounds: tuple[int, ...] = ()
    """in a paired session, the round each sample ran in (its partner on the other side
    has the same index)"""
    budget_stopped: bool = False
    """its timed executions stopped on the run's time budget, before ``repeat``"""

    @property
    def latency(self) -> LatencySummary | None:
        return summarise_latencies(self.samples_ns)

    @property
    def server_p50_ms(self) -> float | None:
        return median([e.execution_ms for e in self.explains if e.execution_ms is not None])

    @property
    def throughput_per_s(self) -> float | None:
        return len(self.samples_ns) / self.wall_seconds if self.wall_seconds > 0 else None

    @property
    def meets_target(self) -> bool | None:
        """p95 within the target; None when there is no target or no sample."""
        latency = self.latency
        if self.target_ms is None or latency is None:
            return None
        return self.status == "ok" and latency.p95_ms <= self.target_ms

    def to_document(self) -> dict[str, Any]:
        """This entry as it is stored in results documents."""
        latency = self.latency
        return {
            "name": self.name,
            "kind": self.kind,
            "workload": self.workload,
            "path": self.path,
            "variant": self.variant,
            "sql": self.sql,
            "target_ms": self.target_ms,
            "clients": self.clients,
            "status": self.status,
            "error": self.error,
            "timeouts": self.timeouts,
            "budget_stopped": self.budget_stopped,
            "wall_seconds": self.wall_seconds,
            "throughput_per_s": self.throughput_per_s,
            "meets_target": self.meets_target,
            "summary": latency.to_dict() if latency else None,
            "server_p50_ms": self.server_p50_ms,
            "samples_ns": list(self.samples_ns),
            "member_samples_ns": {k: list(v) for k, v in self.member_samples_ns.items()},
            "rounds": list(self.rounds),
            "explains": [
                {
                    "execution_ms": e.execution_ms,
                    "planning_ms": e.planning_ms,
                    "shared_hit_blocks": e.shared_hit_blocks,
                    "shared_read_blocks": e.shared_read_blocks,
                    "fingerprint": e.fingerprint,
                }
                for e in self.explains
            ],
            "plan_summaries": {k: v.to_dict() for k, v in self.plan_summaries.items()},
            "plan": self.plan,
        }


_statement_numbers = itertools.count()


class PreparedStatements:
    """Plain statements run the way ``pgbench -M prepared`` runs them: prepared once per
    connection, then ``PQexecPrepared`` with text parameters. The timing covers the round
    trip and the transfer of every row, not turning rows into Python objects (app-layer
    versions measure that cost)."""

    def __init__(self) -> None:
        # Keyed by the libpq connection object itself, held weakly: a new connection never
        # inherits names prepared on a closed one (an id() can be reused).
        self._names: weakref.WeakKeyDictionary[Any, dict[str, bytes]] = weakref.WeakKeyDictionary()

    def execute(self, conn: psycopg.Connection[Any], sql: SqlText, params: dict[str, Any]) -> int:
        """Run ``sql`` and return the number of rows it produced."""
        pgconn = conn.pgconn
        names = self._names.get(pgconn)
        if names is None:
            names = self._names[pgconn] = {}
        name = names.get(sql.positional)
        if name is None:
            name = f"vpbench_{next(_statement_numbers)}".encode()
            _check(conn, pgconn.prepare(name, sql.positional.encode()))
            names[sql.positional] = name
        values: list[Any] = [_encode(params[p]) for p in sql.params]  # None is SQL NULL
        result = _check(conn, pgconn.exec_prepared(name, values))
        return int(result.ntuples)


def _encode(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


def _check(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> pq.abc.PGresult:
    if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    return result


class _StatementTimeoutError(Exception):
    """statement_timeout cancelled the execution."""


def measure_workloads(
    conninfo: str,
    workloads: Sequence[Workload],
    options: RunOptions,
    *,
    applied_migrations: Sequence[str] = (),
    progress: MeasureProgress | None = None,
) -> tuple[EntryResult, ...]:
    """Measure every query, scenario and app version of ``workloads`` in file order."""
    # Parameter pools come through a connection of their own: a session that has just
    # received a million rows answers every later round trip ~8 us slower (measured with
    # bench/overhead.py), and it is the timed session.
    with open_session(conninfo, options.timeout_ms) as conn:
        pools = load_workload_pools(conn, workloads)
    results: list[EntryResult] = []
    with open_session(conninfo, options.timeout_ms) as conn:
        for workload in workloads:
            runner = _EntryRunner(
                conninfo, conn, options, pools[workload.name], applied_migrations, progress
            )
            for query in workload.queries.values():
                results.append(runner.query(query))
                if query.app:
                    results.append(runner.app(query.name, query.app, query, query.sql.params))
            for scenario in workload.scenarios.values():
                members = [workload.queries[name] for name in scenario.queries]
                results.append(runner.scenario(scenario, members))
                if scenario.app:
                    needed = {p for q in members for p in q.sql_for(applied_migrations)[1].params}
                    results.append(runner.app(scenario.name, scenario.app, scenario, needed))
    return tuple(results)


def open_session(
    conninfo: str, timeout_ms: int, application: str = "vpbench"
) -> psycopg.Connection[Any]:
    """An autocommit connection for measuring: ``statement_timeout`` set, named
    ``application`` in pg_stat_activity."""
    conn = open_connection(conninfo, autocommit=True)
    conn.execute("SELECT set_config('statement_timeout', %s, false)", [f"{timeout_ms}ms"])
    conn.execute("SELECT set_config('application_name', %s, false)", [application])
    return conn


class _EntryRunner:
    def __init__(
        self,
        conninfo: str,
        conn: psycopg.Connection[Any],
        options: RunOptions,
        pools: dict[str, ParameterPool],
        applied: Sequence[str],
        progress: MeasureProgress | None,
    ) -> None:
        self.conninfo = conninfo
        self.conn = conn
        self.options = options
        self.pools = pools
        self.applied = applied
        self.progress = progress
        self.statements = PreparedStatements()

    def _tick(self, name: str, done: int) -> None:
        if self.progress:
            self.progress(name, done, self.options.executions())

    def _stream(self, needed: Sequence[str] | set[str], name: str) -> ParameterStream:
        return ParameterStream(self.pools, needed, self.options.seed, name)

    def query(self, query: Query) -> EntryResult:
        variant, sql = query.sql_for(self.applied)
        base = EntryResult(query.name, "query", query.workload, query.path, query.target_ms,
                           self.options.clients, variant=variant, sql=sql.source)  # fmt: skip

        def execute(conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
            self.statements.execute(conn, sql, params)

        timed = self._time(query.name, sql.params, execute, base)
        if timed.status == "error":
            return timed
        explains: list[ExplainRun] = []
        plan: Any = None
        summary: PlanSummary | None = None
        stream = self._stream(sql.params, f"{query.name}/explain")
        began = time.perf_counter()
        for i in range(self.options.explain):
            if self.options.over_budget(began, i, minimum=1):
                break
            try:
                document, current = explain(self.conn, sql, stream.draw())
            except psycopg.errors.QueryCanceled:
                break
            except psycopg.Error as exc:
                return _failed(timed, exc)
            plan, summary = (document, current) if plan is None else (plan, summary)
            explains.append(explain_run(current))
            self._tick(query.name, self.options.executions() - self.options.explain + i + 1)
        summaries = {query.name: summary} if summary else {}
        return _replace(timed, explains=tuple(explains), plan=plan, plan_summaries=summaries)

    def scenario(self, scenario: Scenario, members: Sequence[Query]) -> EntryResult:
        chosen = [(q, *q.sql_for(self.applied)) for q in members]
        needed = {p for _, _, sql in chosen for p in sql.params}
        member_ns: dict[str, list[int]] = {q.name: [] for q in members}
        variants = [f"{q.name}@{v}" for q, v, _ in chosen if v]
        base = EntryResult(scenario.name, "scenario", scenario.workload, scenario.path,
                           scenario.target_ms, self.options.clients,
                           variant=", ".join(variants) or None)  # fmt: skip

        def execute(conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
            for query, _, sql in chosen:
                began = time.perf_counter_ns()
                self.statements.execute(conn, sql, params)
                member_ns[query.name].append(time.perf_counter_ns() - began)

        timed = self._time(scenario.name, sorted(needed), execute, base)
        if timed.status == "error":
            return timed
        timed_count = len(timed.samples_ns)  # the last ones: warm-ups came first
        members_timed = {
            name: tuple(ns[-timed_count:]) if timed_count else () for name, ns in member_ns.items()
        }
        explains: list[ExplainRun] = []
        plans: dict[str, Any] = {}
        summaries: dict[str, PlanSummary] = {}
        stream = self._stream(sorted(needed), f"{scenario.name}/explain")
        began = time.perf_counter()
        for i in range(self.options.explain):
            if self.options.over_budget(began, i, minimum=1):
                break
            params = stream.draw()
            runs: list[ExplainRun] = []
            try:
                for query, _, sql in chosen:
                    document, current = explain(self.conn, sql, params)
                    plans.setdefault(query.name, document)
                    summaries.setdefault(query.name, current)
                    runs.append(explain_run(current))
            except psycopg.errors.QueryCanceled:
                break
            except psycopg.Error as exc:
                return _failed(timed, exc)
            explains.append(combine_explains(runs))
            self._tick(scenario.name, self.options.executions() - self.options.explain + i + 1)
        return _replace(timed, explains=tuple(explains), plan=plans, plan_summaries=summaries,
                        member_samples_ns=members_timed)  # fmt: skip

    def app(
        self, name: str, spec: str, owner: Query | Scenario, needed: Sequence[str] | set[str]
    ) -> EntryResult:
        entry_name = f"{name}[app]"
        base = EntryResult(entry_name, "app", owner.workload, owner.path, owner.target_ms,
                           self.options.clients, variant=spec)  # fmt: skip
        function = resolve_callable(spec, owner.path)

        def execute(conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
            function(conn, params)

        return self._time(entry_name, sorted(needed), execute, base)

    def _time(
        self,
        name: str,
        needed: Sequence[str] | set[str],
        execute: Callable[[psycopg.Connection[Any], dict[str, Any]], None],
        base: EntryResult,
    ) -> EntryResult:
        """Warm up, then time ``repeat`` executions per client (clients run concurrently)."""
        clients = self.options.clients
        done = [0]
        lock = threading.Lock()

        def one_client(
            index: int, conn: psycopg.Connection[Any], start: threading.Barrier | None
        ) -> tuple[list[int], int, str | None, float, bool]:
            """Samples, timeouts, error, the seconds the timed executions took, and whether
            they stopped on the time budget."""
            stream = self._stream(needed, f"{name}#{index}")
            # Drawn up front: Python work between executions keeps the client's core busy,
            # and the scheduler then wakes the server process on the other core, which
            # makes each round trip slower than pgbench's (bench/overhead.py).
            warmups = [stream.draw() for _ in range(self.options.warmup)]
            draws = [stream.draw() for _ in range(self.options.repeat)]
            samples: list[int] = []
            timeouts = 0
            stopped = False
            began = time.perf_counter()
            budget = self.options.over_budget
            try:
                for done_warm, params in enumerate(warmups):
                    if budget(began, done_warm, minimum=1):
                        break
                    _run_once(conn, execute, params)
                    self._count(name, done, lock)
                if start:
                    start.wait()
                began = time.perf_counter()
                for done_timed, params in enumerate(draws):
                    if budget(began, done_timed, minimum=self.options.min_rounds):
                        stopped = True
                        break
                    try:
                        samples.append(_run_once(conn, execute, params))
                    except _StatementTimeoutError:
                        timeouts += 1
                        if timeouts >= MAX_TIMEOUTS:
                            break
                    self._count(name, done, lock)
            except _StatementTimeoutError:
                timeouts += 1
            except psycopg.Error as exc:
                seconds = time.perf_counter() - began
                return samples, timeouts, error_message(exc), seconds, stopped
            return samples, timeouts, None, time.perf_counter() - began, stopped

        if clients == 1:
            outcomes = [one_client(0, self.conn, None)]
            wall = outcomes[0][3]  # the timed executions only, not the warm-up
        else:
            barrier = threading.Barrier(clients + 1)
            connections = [
                open_session(self.conninfo, self.options.timeout_ms) for _ in range(clients)
            ]
            try:
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    futures = [
                        pool.submit(one_client, i, c, barrier) for i, c in enumerate(connections)
                    ]
                    barrier.wait()
                    began = time.perf_counter()
                    outcomes = [f.result() for f in futures]
                    wall = time.perf_counter() - began
            finally:
                for connection in connections:
                    connection.close()
        samples = tuple(ns for outcome in outcomes for ns in outcome[0])
        timeouts = sum(outcome[1] for outcome in outcomes)
        errors = [outcome[2] for outcome in outcomes if outcome[2]]
        status = "error" if errors else "timeout" if timeouts else "ok"
        return _replace(base, status=status, error=errors[0] if errors else None,
                        samples_ns=samples, timeouts=timeouts, wall_seconds=wall,
                        budget_stopped=any(outcome[4] for outcome in outcomes))  # fmt: skip

    def _count(self, name: str, done: list[int], lock: threading.Lock) -> None:
        with lock:
            done[0] += 1
            self._tick(name, done[0])


def _run_once(
    conn: psycopg.Connection[Any],
    execute: Callable[[psycopg.Connection[Any], dict[str, Any]], None],
    params: dict[str, Any],
) -> int:
    began = time.perf_counter_ns()
    try:
        execute(conn, params)
    except psycopg.errors.QueryCanceled:
        raise _StatementTimeoutError from None
    return time.perf_counter_ns() - began


def explain(
    conn: psycopg.Connection[Any], sql: SqlText, params: dict[str, Any]
) -> tuple[Any, PlanSummary]:
    """EXPLAIN (ANALYZE, BUFFERS) ``sql`` once: the JSON document and its summary."""
    row = conn.execute(EXPLAIN + sql.runnable, params).fetchone()
    assert row is not None
    return row[0], summarise_plan(row[0])


def explain_run(summary: PlanSummary) -> ExplainRun:
    return ExplainRun(summary.execution_ms, summary.planning_ms, summary.shared_hit_blocks,
                      summary.shared_read_blocks, summary.fingerprint)  # fmt: skip


def combine_explains(runs: Sequence[ExplainRun]) -> ExplainRun:
    """One EXPLAIN run of a scenario from its queries' runs: times and buffers add up."""

    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    digest = hashlib.blake2b("/".join(r.fingerprint for r in runs).encode(), digest_size=8)
    return ExplainRun(
        total([r.execution_ms for r in runs]),
        total([r.planning_ms for r in runs]),
        sum(r.shared_hit_blocks for r in runs),
        sum(r.shared_read_blocks for r in runs),
        digest.hexdigest(),
    )


def _failed(entry: EntryResult, exc: psycopg.Error) -> EntryResult:
    return _replace(entry, status="error", error=error_message(exc))


def _replace(entry: EntryResult, **changes: Any) -> EntryResult:
    return replace(entry, **changes)
