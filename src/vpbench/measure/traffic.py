"""Live traffic while a migration runs, and who blocked whom.

Reader sessions run the workloads' queries back to back with sampled parameters, the SQL of
the app deployed before the step; writer sessions write quiz attempts and reflections the
way the app does, at a steady rate, in turn a prepared single-row INSERT and an UPDATE of
a stored row (every column the app knows set to the values it read, as an ORM saves a
row), in transactions that are rolled back, so that they take the app's locks (row locks
included: a backfill's batch holds those of the rows it changes) without changing the data
(unless ``commit_writes``). Every request's start, latency and outcome is kept. A sampler reads
``pg_locks`` and ``pg_blocking_pids()`` every ``sample_ms``: each traffic session waiting
for a lock, on what, since when (``pg_locks.waitstart``, PostgreSQL 14 and later), and
whether the migration's session (the one ``watch`` names) is in its way, with the
migration statement running then and the lock the migration holds or is itself queued
for. The traffic runs at rest first, until every query and write has a few at-rest
latencies: the spread a slowed request is judged by.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import psycopg

from vpbench.measure.runner import PreparedStatements, open_session
from vpbench.measure.writecost import WRITE_TABLES, app_inserts, app_updates, fresh_ids
from vpbench.migrations.apply import StepApplied, apply_step
from vpbench.migrations.folder import Migration
from vpbench.migrations.locking import LockPolicy
from vpbench.migrations.statements import first_line
from vpbench.server.target import open_connection
from vpbench.workload.sampling import ParameterPool, ParameterStream
from vpbench.workload.spec import SqlText, Workload

log = logging.getLogger(__name__)

APPLICATION = "vpbench-traffic"

_WAITS = """
SELECT a.application_name, a.pid, c.relname, l.locktype, l.mode, pg_blocking_pids(a.pid),
       {waited}
FROM pg_stat_activity a
JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
LEFT JOIN pg_class c ON c.oid = l.relation
WHERE a.datname = current_database() AND a.application_name LIKE 'vpbench-traffic %%'
"""
_WAITED = "extract(epoch FROM clock_timestamp() - l.waitstart)::float8"
"""how long the lock has been waited for (``waitstart``: PostgreSQL 14 and later)"""
WAITSTART_SINCE = 140000
_MIGRATION = """
SELECT a.query, coalesce(array_agg(c.relname || '=' || l.mode)
                         FILTER (WHERE l.granted AND c.relname IS NOT NULL), '{}'),
       coalesce(array_agg(c.relname || '=' || l.mode)
                FILTER (WHERE NOT l.granted AND c.relname IS NOT NULL), '{}')
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'relation'
LEFT JOIN pg_class c ON c.oid = l.relation
WHERE a.pid = %s
GROUP BY a.query
"""


@dataclass(frozen=True)
class TrafficOptions:
    readers: int = 2
    writers: int = 1
    writes_per_s: float = 200.0
    """all writers together"""
    sample_ms: float = 50.0
    """period of the lock sampler"""
    baseline_s: float = 2.0
    """traffic before the migration starts, at least: the at-rest latencies"""
    baseline_requests: int = 3
    """... and until every query and every write has this many at-rest latencies"""
    baseline_max_s: float = 30.0
    """... or this long, whichever comes first"""
    timeout_ms: int = 30_000
    """statement_timeout of every request"""
    seed: int = 1
    commit_writes: bool = False
    """the writers commit their writes (each inserted row with a new id) instead of rolling
    them back: the rows the app writes while a step runs, for checks of what the step makes
    of them"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_TRAFFIC = TrafficOptions()


@dataclass(frozen=True)
class Request:
    session: str
    """``read 1``, ``write 1``"""
    kind: str
    """``read`` or ``write``"""
    name: str
    """the query, or the table written"""
    start_s: float
    ms: float
    outcome: str
    """``ok``, ``lock_timeout``, ``statement_timeout`` or ``error``"""
    sqlstate: str | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.ms / 1000


def warmed(requests: Iterable[Request]) -> list[Request]:
    """``requests`` less each session's first of each query or table written, which also
    prepared its statement (a warm-up, as in pgbench)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for request in sorted(requests, key=lambda r: r.start_s):
        if (request.session, request.name) in seen:
            kept.append(request)
        seen.add((request.session, request.name))
    return kept


@dataclass(frozen=True)
class Wait:
    """One traffic session seen waiting for a lock by the sampler."""

    at_s: float
    session: str
    waits_for: str
    """``RowExclusiveLock on quiz_attempts`` (or on a transaction id)"""
    since_s: float | None
    """when the wait began (``pg_locks.waitstart``); None before PostgreSQL 14"""
    by_migration: bool
    """the migration's session is in its way, directly or through another waiting session"""
    statement: str | None
    """the migration statement running then"""
    migration_holds: str | None
    """the migration's lock on the same relation"""
    migration_waits: str | None = None
    """the lock the migration itself waits for on that relation: the app's request queued
    behind it (a lock queue), not behind a lock it holds"""


@dataclass(frozen=True)
class TrafficRecord:
    requests: tuple[Request, ...]
    waits: tuple[Wait, ...]
    sampled_s: tuple[float, ...]
    """when each sample was taken: a wait last seen at one ended before the next"""
    migration_s: tuple[float, float] | None
    """when the watched migration started and ended, on the traffic's clock"""
    held: tuple[HeldLock, ...] = ()
    """the relation locks the sampler saw the migration hold, first and last seen"""

    @property
    def samples(self) -> int:
        return len(self.sampled_s)


@dataclass(frozen=True)
class HeldLock:
    lock: str
    """``AccessExclusiveLock on quiz_attempts``"""
    first_s: float
    last_s: float
    """seconds since the migration started, as sampled"""
    statement: str | None
    """the statement running when it was first seen"""


@dataclass
class _Shared:
    began: float
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    sampled_s: list[float] = field(default_factory=list)
    migration_pid: int | None = None
    migration_statement: str | None = None
    """the migration statement last started, as the migration reports it"""
    migration_s: list[float] = field(default_factory=list)
    connections: list[psycopg.Connection[Any]] = field(default_factory=list)
    held: dict[str, list[Any]] = field(default_factory=dict)
    """lock -> [first seen, last seen, statement then]"""
    active: set[str] = field(default_factory=set)
    """sessions still sending requests"""

    def cancel_all(self) -> None:
        """Cancel what every traffic session is running (a request queued behind the
        migration's lock would otherwise hold the stop up until its statement_timeout)."""
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            if not conn.closed:
                try:
                    conn.cancel_safe(timeout=5)
                except (psycopg.Error, OSError) as exc:
                    log.info("cannot cancel a traffic session: %s", exc)

    def now(self) -> float:
        return time.perf_counter() - self.began

    def add(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def at_rest(self) -> Counter[tuple[str, str]]:
        """Completed requests per (kind, name) so far, past each session's first."""
        with self.lock:
            return Counter((r.kind, r.name) for r in warmed(self.requests) if r.outcome == "ok")


def _rolled_back(
    conn: psycopg.Connection[Any], statements: PreparedStatements, sql: SqlText, row: dict[str, Any]
) -> None:
    """One app write, with its locks, and no row left behind."""
    with conn.transaction(force_rollback=True):
        statements.execute(conn, sql, row)


class LiveTraffic:
    """Readers, writers and the lock sampler, on threads of their own, for the duration of
    ``running()``."""

    def __init__(
        self,
        conninfo: str,
        workloads: Sequence[Workload],
        pools: Mapping[str, dict[str, ParameterPool]],
        applied: Sequence[str],
        options: TrafficOptions = TrafficOptions(),
    ) -> None:
        self.conninfo, self.options = conninfo, options
        self.queries = [
            (workload.name, query) for workload in workloads for query in workload.queries.values()
        ]
        self.pools, self.applied = pools, applied
        self._shared = _Shared(time.perf_counter())
        self._writes: set[str] = set()
        """what the writers write, ``quiz_attempts`` and ``quiz_attempts update`` (known once
        they have started)"""

    @contextmanager
    def running(self) -> Iterator[LiveTraffic]:
        shared = self._shared = _Shared(time.perf_counter())
        threads = [threading.Thread(target=self._sample, name="sampler", daemon=True)]
        sessions = [(self._read, f"read {n}", n) for n in range(1, self.options.readers + 1)]
        sessions += [(self._write, f"write {n}", n) for n in range(1, self.options.writers + 1)]
        shared.active = {name for _, name, _ in sessions}
        threads += [
            threading.Thread(target=self._session, args=(run, name, n), name=name, daemon=True)
            for run, name, n in sessions
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            shared.stop.set()
            shared.cancel_all()
            for thread in threads:
                thread.join()

    @contextmanager
    def watch(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Attribute waits to this session (the migration's) while the context lasts."""
        shared = self._shared
        shared.migration_pid = conn.info.backend_pid
        shared.migration_s = [shared.now()]
        try:
            yield
        finally:
            shared.migration_s.append(shared.now())
            shared.migration_pid = shared.migration_statement = None

    def migration_runs(self, statement: str) -> None:
        """The migration has started ``statement`` (its first line): waits name it, not
        what the server shows the session running between statements (vpbench's probes)."""
        self._shared.migration_statement = statement

    def wait_for_baseline(self) -> None:
        """Let the traffic run at rest for ``baseline_s``, then until every query and write
        has ``baseline_requests`` latencies (or ``baseline_max_s`` has passed)."""
        options, shared = self.options, self._shared
        time.sleep(options.baseline_s)
        expected = {("read", query.name) for _, query in self.queries} if options.readers else set()
        expected |= {("write", name) for name in self._writes}
        deadline = time.perf_counter() + max(0.0, options.baseline_max_s - options.baseline_s)
        while time.perf_counter() < deadline and not shared.stop.is_set():
            done = shared.at_rest()
            if all(done[key] >= options.baseline_requests for key in expected):
                return
            if not shared.active:
                return
            time.sleep(0.05)

    def drain(self) -> None:
        """Wait until every traffic session has finished what it started before now (a
        request queued behind the migration completes when it commits): stopping at once
        would cancel the very requests that stalled. Bounded by the traffic's
        statement_timeout."""
        shared = self._shared
        since = shared.now()
        deadline = time.perf_counter() + self.options.timeout_ms / 1000
        while time.perf_counter() < deadline:
            with shared.lock:
                moved = {r.session for r in shared.requests if r.start_s >= since}
                if shared.active <= moved:
                    return
            time.sleep(0.05)

    def record(self) -> TrafficRecord:
        shared = self._shared
        with shared.lock:
            window = shared.migration_s
            return TrafficRecord(
                requests=tuple(sorted(shared.requests, key=lambda r: r.start_s)),
                waits=tuple(shared.waits),
                sampled_s=tuple(shared.sampled_s),
                migration_s=(window[0], window[1]) if len(window) == 2 else None,
                held=tuple(
                    HeldLock(lock, first - window[0], last - window[0], statement)
                    for lock, (first, last, statement) in shared.held.items()
                )
                if window
                else (),
            )

    def _connect(self, session: str) -> psycopg.Connection[Any]:
        conn = open_session(self.conninfo, self.options.timeout_ms, f"{APPLICATION} {session}")
        # psycopg prepares a query it has run five times, and then answers a rollback with
        # DEALLOCATE ALL, which would drop the app's prepared writes too.
        conn.prepare_threshold = None
        with self._shared.lock:
            self._shared.connections.append(conn)
        return conn

    def _session(self, run: Callable[[int], None], name: str, number: int) -> None:
        try:
            run(number)
        except (psycopg.Error, OSError) as exc:  # the session itself broke: say so, end it
            log.warning("traffic session %s ended: %s", name, exc)
        finally:
            with self._shared.lock:
                self._shared.active.discard(name)

    def _read(self, number: int) -> None:
        shared, session = self._shared, f"read {number}"
        if not self.queries:
            return
        # The SQL the deployed app sends, and a parameter stream for each query, once.
        requests = [
            (query.name, sql, ParameterStream(self.pools[workload], sql.params,
                                              self.options.seed + number,
                                              f"traffic {query.name}"))
            for workload, query in self.queries
            for sql in [query.sql_for(self.applied)[1]]
        ]  # fmt: skip
        # Readers start the cycle at different queries, so the slow ones get at-rest
        # latencies sooner.
        offset = (number - 1) * len(requests) // max(self.options.readers, 1)
        requests = requests[offset:] + requests[:offset]
        with self._connect(session) as conn:
            statements = PreparedStatements()
            for name, sql, stream in itertools.cycle(requests):
                if shared.stop.is_set():
                    return
                run = partial(statements.execute, conn, sql, stream.draw())
                self._timed(shared, session, "read", name, conn, run)
                if conn.closed:
                    return

    def _write(self, number: int) -> None:
        shared, session = self._shared, f"write {number}"
        with self._connect(session) as conn:
            seed = self.options.seed + number
            writes = [
                (name, found)
                for table in WRITE_TABLES
                for name, found in (
                    (table, app_inserts(conn, table, 200, seed)),
                    (f"{table} update", app_updates(conn, table, 200, seed)),
                )
                if found
            ]
            with shared.lock:
                self._writes.update(name for name, _ in writes)
            if not writes:
                return
            statements = PreparedStatements()
            new_ids = fresh_ids(seed)
            interval = max(self.options.writers, 1) / self.options.writes_per_s
            due = time.perf_counter()
            for count in itertools.count():
                if shared.stop.wait(max(0.0, due - time.perf_counter())):
                    return
                due += interval
                name, (sql, rows) = writes[count % len(writes)]
                row = rows[(count // len(writes)) % len(rows)]
                write: Callable[[], object]
                if self.options.commit_writes:
                    if not name.endswith(" update"):
                        row = {**row, "id": next(new_ids)}
                    write = partial(statements.execute, conn, sql, row)  # autocommit
                else:
                    write = partial(_rolled_back, conn, statements, sql, row)
                self._timed(shared, session, "write", name, conn, write)
                if conn.closed:
                    return

    @staticmethod
    def _timed(
        shared: _Shared,
        session: str,
        kind: str,
        name: str,
        conn: psycopg.Connection[Any],
        run: Callable[[], object],
    ) -> None:
        start = shared.now()
        began = time.perf_counter()
        outcome, sqlstate = "ok", None
        try:
            run()
        except psycopg.errors.LockNotAvailable as exc:
            outcome, sqlstate = "lock_timeout", exc.sqlstate
        except psycopg.errors.QueryCanceled as exc:
            outcome, sqlstate = "statement_timeout", exc.sqlstate
        except psycopg.Error as exc:
            outcome, sqlstate = "error", exc.sqlstate
        if outcome != "ok" and shared.stop.is_set():
            return  # cancelled by the stop, not by the migration
        shared.add(Request(session, kind, name, start, (time.perf_counter() - began) * 1e3,
                           outcome, sqlstate))  # fmt: skip

    def _sample(self) -> None:
        shared = self._shared
        period = self.options.sample_ms / 1000
        with open_connection(self.conninfo, autocommit=True) as conn:
            conn.execute("SELECT set_config('application_name', 'vpbench-sampler', false)")
            waited = _WAITED if conn.info.server_version >= WAITSTART_SINCE else "NULL::float8"
            query = _WAITS.format(waited=waited)
            while not shared.stop.wait(period):
                self._sample_once(conn, shared, query)

    @staticmethod
    def _sample_once(conn: psycopg.Connection[Any], shared: _Shared, query: str) -> None:
        at, pid, reported = shared.now(), shared.migration_pid, shared.migration_statement
        waiting = conn.execute(query).fetchall()
        statement, held, items, queued = None, {}, [], {}
        if pid is not None:
            row = conn.execute(_MIGRATION, [pid]).fetchone()
            if row is not None:
                # an alembic project's online run reports none: the session's query then
                statement = reported or first_line(row[0] or "") or None
                items = [tuple(item.split("=", 1)) for item in row[1]]
                held = dict(items)
                queued = dict(tuple(item.split("=", 1)) for item in row[2])
        blocked = {r[1] for r in waiting if pid is not None and pid in (r[5] or ())}
        # A session queued behind one that waits for the migration waits for it too.
        for _ in range(len(waiting)):
            blocked |= {r[1] for r in waiting if set(r[5] or ()) & blocked}
        with shared.lock:
            shared.sampled_s.append(at)
            for relation, mode in items:
                seen = shared.held.setdefault(f"{mode} on {relation}", [at, at, statement])
                seen[1] = at
            for app, waiter, relation, locktype, mode, _, waited_s in waiting:
                target = relation if relation else locktype
                shared.waits.append(
                    Wait(
                        at_s=at,
                        session=app.removeprefix(f"{APPLICATION} "),
                        waits_for=f"{mode} on {target}",
                        since_s=at - waited_s if waited_s is not None else None,
                        by_migration=waiter in blocked,
                        statement=statement,
                        migration_holds=held.get(relation) if relation else None,
                        migration_waits=queued.get(relation) if relation else None,
                    )
                )


def apply_under_load(
    conn: psycopg.Connection[Any],
    migration: Migration,
    direction: str,
    locks: LockPolicy,
    traffic: LiveTraffic,
) -> tuple[StepApplied, TrafficRecord]:
    """Run the traffic at rest for its baseline window, then apply the step on ``conn`` while it
    goes on, watching the migration's session; the traffic stops when the step ends."""
    with traffic.running():
        traffic.wait_for_baseline()
        with traffic.watch(conn):
            applied = apply_step(conn, migration, direction, locks, traffic.migration_runs)
        traffic.drain()
    return applied, traffic.record()
