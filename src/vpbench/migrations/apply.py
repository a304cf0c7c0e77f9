"""Apply and revert migrations, one transaction per step, recorded in the ledger.

Each step's SQL and its ledger row commit together (or not at all). A step marked
``transactional = false`` (e.g. CREATE INDEX CONCURRENTLY, batched backfills) runs
statement by statement in autocommit mode, except that statements between ``BEGIN;`` and
``COMMIT;`` run as one transaction (as psql would run the file): a failure then leaves
earlier statements applied, which ``steps`` undoes by restoring its backup. Lock timeouts
are retried (``vpbench.migrations.locking``): the statement, or its whole BEGIN block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from vpbench.errors import MigrationError, UnknownMigrationError
from vpbench.migrations.alembic_online import run_online
from vpbench.migrations.folder import Migration
from vpbench.migrations.ledger import ledger, record_step
from vpbench.migrations.locking import DEFAULT_LOCKS, LockPolicy, LockRetry, with_lock_retries
from vpbench.migrations.statements import (
    first_line,
    group_transactions,
    keywords,
    split_statements,
)

log = logging.getLogger(__name__)

BASE = "base"
"""``migrate down base`` reverts every applied migration."""

_HELD_LOCKS = """
SELECT c.oid::regclass::text, l.mode FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'vpbench')
  AND n.nspname NOT LIKE 'pg_toast%'
"""
_FILES = """
SELECT c.oid, c.relname, c.relfilenode FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'vpbench')
  AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'i', 'm', 'p')
"""


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: datetime | None

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


@dataclass(frozen=True)
class StatementRun:
    """One statement of a step as the server ran it."""

    line: int
    text: str
    """its first line"""
    started_s: float
    """since the step began"""
    seconds: float
    locks: tuple[str, ...]
    """relation locks the step held after it, that it did not hold before ("AccessExclusiveLock
    on quiz_attempts"); a transactional step holds them until it commits"""
    rewrote: tuple[str, ...]
    """tables and indexes it gave new files (relfilenode changed): rewritten"""
    lock_timeout: str = ""
    """``lock_timeout`` in force while it ran ("2s"; "0" is none)"""
    statement_timeout: str = ""
    committed_s: float | None = None
    """when the BEGIN block it ran in committed (a non-transactional step's block)"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LockHold:
    """A relation lock the step took, from the statement that took it until it was let go
    (the commit of a transactional step; the statement's end otherwise)."""

    lock: str
    line: int
    from_s: float
    until_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepApplied:
    migration: Migration
    direction: str
    seconds: float
    lock_retries: tuple[LockRetry, ...] = ()
    """attempts that timed out waiting for a lock before the one that went through"""
    statements: tuple[StatementRun, ...] = ()
    """the statements of the attempt that went through"""

    @property
    def lock_holds(self) -> tuple[LockHold, ...]:
        """Every lock the step took and how long it held it (seconds since it began)."""
        return tuple(
            LockHold(lock, run.line, run.started_s, self._released_s(run))
            for run in self.statements
            for lock in run.locks
        )

    def _released_s(self, run: StatementRun) -> float:
        if self.migration.transactional:
            return self.seconds
        return run.committed_s if run.committed_s is not None else run.started_s + run.seconds


def migration_states(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration]
) -> tuple[MigrationState, ...]:
    """Each migration with when it was applied; refuses edited or unknown applied steps."""
    entries = ledger(conn)
    by_id = {m.id: m for m in migrations}
    for entry in entries.values():
        migration = by_id.get(entry.id)
        if migration is None:
            raise MigrationError(
                f"the database has migration {entry.id!r} applied, which is not in the "
                "migrations folder",
                hint="use the folder it was applied from (--migrations)",
            )
        if migration.checksum != entry.checksum:
            raise MigrationError(
                f"migration {entry.id} was edited after it was applied "
                f"(checksum {entry.checksum[:12]} in the ledger, "
                f"{migration.checksum[:12]} on disk)",
                path=migration.path,
                hint="revert it with the original files, or add a new migration instead",
            )
    applied = [m.id for m in migrations if m.id in entries]
    expected = [m.id for m in migrations[: len(applied)]]
    if applied != expected:
        raise MigrationError(
            f"applied migrations {', '.join(applied)} are not a prefix of the series "
            f"({', '.join(expected)})"
        )
    return tuple(
        MigrationState(m, entries[m.id].applied_at if m.id in entries else None) for m in migrations
    )


def plan_up(states: Sequence[MigrationState], target: str | None) -> tuple[Migration, ...]:
    """The pending migrations up to and including ``target`` (default: all)."""
    pending = [s.migration for s in states if not s.applied]
    if target is None:
        return tuple(pending)
    ids = [s.migration.id for s in states]
    check_target(target, ids, base_allowed=False)
    return tuple(m for m in pending if ids.index(m.id) <= ids.index(target))


def plan_down(states: Sequence[MigrationState], target: str | None) -> tuple[Migration, ...]:
    """Migrations to revert, newest first: the last one, every one after ``target``, or all
    for ``base``."""
    applied = [s.migration for s in states if s.applied]
    if target is None:
        return tuple(applied[-1:])
    if target == BASE:
        return tuple(reversed(applied))
    ids = [s.migration.id for s in states]
    check_target(target, ids, base_allowed=True)
    return tuple(m for m in reversed(applied) if ids.index(m.id) > ids.index(target))


def check_target(target: str, ids: Sequence[str], *, base_allowed: bool) -> None:
    """Refuse a ``--to``/``TARGET`` that is not a migration of the series (``base``, before
    the first one, is a target of going down only)."""
    if target in ids or (base_allowed and target == BASE):
        return
    known = ", ".join([*ids, BASE] if base_allowed and ids else ids) or "none"
    if target == BASE:
        raise UnknownMigrationError(f"{BASE!r} is a target of migrate down only; going up, "
                                    f"name a migration: {known}")  # fmt: skip
    raise UnknownMigrationError(f"unknown migration {target!r}; known: {known}")


class _StatementLog:
    """What each statement of one attempt did: its time, the locks it added, the files it
    replaced (read on the migration's own connection, between statements). ``on_statement``
    hears each statement's first line as it starts: the probes in between are not the
    migration's, though the server shows them as its session's query."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        script: str,
        began: float,
        on_statement: Callable[[str], None] | None = None,
    ) -> None:
        self.conn, self.script, self.began = conn, script, began
        self.on_statement = on_statement
        self.runs: list[StatementRun] = []
        self.locks = self._locks()
        self.files = self._files()

    def _locks(self) -> set[str]:
        return {f"{mode} on {rel}" for rel, mode in self.conn.execute(_HELD_LOCKS).fetchall()}

    def _files(self) -> dict[int, tuple[str, int]]:
        return {oid: (name, node) for oid, name, node in self.conn.execute(_FILES).fetchall()}

    def run(self, statement: str, offset: int) -> None:
        row = self.conn.execute(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        ).fetchone()
        lock_timeout, statement_timeout = row if row else ("", "")
        text = first_line(statement)
        if self.on_statement is not None:
            self.on_statement(text)
        started = time.perf_counter()
        self.conn.execute(statement)
        seconds = time.perf_counter() - started
        locks, files = self._locks(), self._files()
        rewrote = sorted(
            name
            for oid, (name, node) in files.items()
            if oid in self.files and self.files[oid][1] != node
        )
        self.runs.append(
            StatementRun(
                line=self.script[:offset].count("\n") + 1,
                text=text,
                started_s=started - self.began,
                seconds=seconds,
                locks=tuple(sorted(locks - self.locks)),
                rewrote=tuple(rewrote),
                lock_timeout=str(lock_timeout),
                statement_timeout=str(statement_timeout),
            )
        )
        self.locks, self.files = locks, files

    def committed(self, first: int) -> None:
        """The runs from ``first`` on were one BEGIN block, which has just committed."""
        now = time.perf_counter() - self.began
        self.runs[first:] = [replace(run, committed_s=now) for run in self.runs[first:]]
        self.locks = self._locks()  # let go with the commit


def apply_step(
    conn: psycopg.Connection[Any],
    migration: Migration,
    direction: str,
    locks: LockPolicy = DEFAULT_LOCKS,
    on_statement: Callable[[str], None] | None = None,
) -> StepApplied:
    """Run ``up`` or ``down`` of one migration and update the ledger in the same transaction
    (``conn`` must be in autocommit mode), every statement under ``locks.timeout_ms`` of
    ``lock_timeout`` (a ``CONCURRENTLY`` one under ``locks.timeout_for(concurrent=True)``);
    a lock timeout retries the step (the statement, for a
    non-transactional one; never a ``CONCURRENTLY`` one, whose failure leaves an invalid
    index behind), and each retry is recorded. ``on_statement`` hears the first line of each
    statement as it starts (not of an alembic project's online run)."""
    with _notices_logged(conn, migration.id):
        return _apply(conn, migration, direction, locks, on_statement)


@contextmanager
def _notices_logged(conn: psycopg.Connection[Any], migration_id: str) -> Iterator[None]:
    """Log the server's NOTICEs while the step runs (``-v``), as they arrive: a batched
    backfill's progress, what a step counted."""

    def notice(diagnostic: psycopg.errors.Diagnostic) -> None:
        message = diagnostic.message_primary or ""
        named = message if message.startswith(f"{migration_id}:") else f"{migration_id}: {message}"
        log.info("%s", named)

    conn.add_notice_handler(notice)
    try:
        yield
    finally:
        conn.remove_notice_handler(notice)


def _apply(
    conn: psycopg.Connection[Any],
    migration: Migration,
    direction: str,
    locks: LockPolicy,
    on_statement: Callable[[str], None] | None,
) -> StepApplied:
    script = migration.up_sql if direction == "up" else migration.down_sql
    began = time.perf_counter()
    retries: list[LockRetry] = []
    timeout = f"SET lock_timeout = {int(locks.timeout_ms)}"
    observed: list[_StatementLog] = []
    if migration.online:

        def online() -> None:
            try:
                run_online(conn, migration, direction, int(locks.timeout_ms))
            except psycopg.Error as exc:
                raise _failure(migration, direction, script, exc, 0) from exc

        with_lock_retries(online, locks, retries)
    elif migration.transactional:

        def whole_step() -> None:
            offset = 0
            try:
                with conn.transaction():
                    conn.execute(timeout.replace("SET", "SET LOCAL", 1))
                    observed[:] = [_StatementLog(conn, script, began, on_statement)]
                    # Statement by statement, so a failure names the statement that failed.
                    for statement, start in split_statements(script):
                        offset = start
                        observed[0].run(statement, start)
                    record_step(conn, migration, direction, time.perf_counter() - began)
            except psycopg.Error as exc:
                raise _failure(migration, direction, script, exc, offset) from exc

        with_lock_retries(whole_step, locks, retries)
    else:
        conn.execute(timeout)
        observed.append(_StatementLog(conn, script, began, on_statement))
        try:
            for unit in group_transactions(script):  # its shape was checked on discovery

                def one_unit(unit: list[tuple[str, int]] = unit) -> None:
                    offset = unit[0][1]
                    try:
                        if len(unit) == 1:
                            observed[0].run(*unit[0])  # autocommit: it stands alone
                            return
                        first = len(observed[0].runs)
                        with conn.transaction():
                            for statement, offset in unit:
                                observed[0].run(statement, offset)
                        observed[0].committed(first)
                    except psycopg.Error as exc:
                        raise _failure(migration, direction, script, exc, offset) from exc

                concurrent = any("CONCURRENTLY" in keywords(s) for s, _ in unit)
                if locks.timeout_for(concurrent=True) != locks.timeout_ms:
                    conn.execute(f"SET lock_timeout = {locks.timeout_for(concurrent=concurrent)}")
                with_lock_retries(one_unit, locks, retries, concurrent=concurrent)
            with conn.transaction():
                record_step(conn, migration, direction, time.perf_counter() - began)
        finally:
            if not conn.closed:
                conn.execute("RESET lock_timeout")
    seconds = time.perf_counter() - began
    log.info("migration %s %s in %.2fs", migration.id, direction, seconds)
    runs = tuple(observed[0].runs) if observed else ()
    return StepApplied(migration, direction, seconds, tuple(retries), runs)


def _failure(
    migration: Migration, direction: str, script: str, exc: psycopg.Error, offset: int
) -> MigrationError:
    """Name the file, line and statement the server complained about."""
    position = exc.diag.statement_position
    at = offset + int(position) - 1 if position and position.isdigit() else offset
    line = script[:at].count("\n") + 1
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    statement = script[offset:].strip().splitlines()[0] if script[offset:].strip() else ""
    detail = f" in `{statement[:60]}`" if statement else ""
    if exc.diag.context:
        detail += f" ({exc.diag.context.strip().splitlines()[0]})"
    path, line_or_none, where = migration.located(direction, line)
    return MigrationError(
        f"migration {migration.id} {direction} failed: {message}{detail}{where}",
        path=path,
        line=line_or_none,
        sqlstate=exc.sqlstate,
    )
