"""The working copy of a team's own data: a database (on this server or another) or a
``pg_dump -Fc`` file, copied into a new database vpbench owns. The source is only read:
nothing is written to it and no session on it is ended.

A database on the same server with no session on it is copied as a template (a clone on
PostgreSQL 18 where the filesystem shares blocks; new sessions to it wait while the copy is
made). A busy one, or one on another server, is dumped with ``pg_dump`` (one
snapshot-consistent transaction, ACCESS SHARE locks only) and restored.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from vpbench.errors import BackupError, BadInputError, ServerError
from vpbench.server.backup import DUMP, restore_dump, run_client, template_copy
from vpbench.server.databases import drop_database, mark_database
from vpbench.server.target import (
    ServerTarget,
    connect,
    database_or_dsn,
    open_connection,
    server_address,
)

RESTORE = "pg_restore"
DUMP_MAGIC = b"PGDMP"
"""the first bytes of a ``pg_dump`` custom-format archive"""


class SourceError(BadInputError):
    """``--from`` or ``--from-dump`` names nothing vpbench can copy; nothing was written."""


@dataclass(frozen=True)
class StartFrom:
    """A team's own data for ``steps`` instead of a seeded profile: a database (a name on
    the server, or a DSN) or a ``pg_dump -Fc`` file. It is only read and copied."""

    database: str | None = None
    dump: Path | None = None

    def describe(self) -> str:
        return f"--from-dump {self.dump}" if self.dump is not None else f"--from {self.database}"


@dataclass(frozen=True)
class SourceCopy:
    """Where the working database's data came from, and how it was copied."""

    source: str
    """``database staging on 127.0.0.1:5432`` or ``dump /path/file.dump``"""
    method: str
    """``clone``, ``template copy``, ``pg_dump/pg_restore`` or ``pg_restore``"""
    why: str
    """why that method ("no session on it", "2 sessions on it: a snapshot-consistent dump")"""
    seconds: float
    copied_at: str
    """UTC, ISO 8601: when the copy was made (the data is the source's as of then)"""
    source_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        size = f", {self.source_bytes / 1024**2:,.0f} MB" if self.source_bytes else ""
        return (f"copy of {self.source} by {self.method} ({self.why}) in {self.seconds:.1f} s"
                f"{size}, {self.copied_at}")  # fmt: skip


@dataclass(frozen=True)
class Source:
    """A database to copy, as read before copying it."""

    shown: str
    """as the user named it"""
    conninfo: str
    same_server: bool
    bytes: int
    sessions: int
    """sessions on it other than autovacuum's"""

    @property
    def name(self) -> str:
        return str(conninfo_to_dict(self.conninfo).get("dbname") or "")


def inspect_source(target: ServerTarget, source: str) -> Source:
    """``source`` (a database name on ``target``'s server, or a DSN): its size and the
    sessions on it, read in one read-only connection."""
    conninfo, named_by_dsn = database_or_dsn(target, source, "--from")
    if not conninfo_to_dict(conninfo).get("dbname"):
        raise SourceError(f"--from {source!r} names no database")
    same_server = not named_by_dsn or (server_address(conninfo) == server_address(target.conninfo))
    try:
        with open_connection(conninfo, autocommit=True, source="--from") as conn:
            conn.execute("SET default_transaction_read_only = on")
            row = conn.execute(
                "SELECT pg_database_size(current_database()), (SELECT count(*) FROM "
                "pg_stat_activity WHERE datname = current_database() AND pid <> "
                "pg_backend_pid() AND backend_type <> 'autovacuum worker')"
            ).fetchone()
    except ServerError as exc:  # the source is the user's input: bad input, not a failure
        raise SourceError(exc.message) from None
    assert row is not None
    return Source(source, conninfo, same_server, int(row[0]), int(row[1]))


def copy_from_database(target: ServerTarget, source: Source, working: str) -> SourceCopy:
    """Copy ``source`` into the new database ``working``: a template copy when it is on
    this server with no session on it, else a snapshot-consistent dump and restore."""
    if source.same_server and source.name == working:
        raise SourceError(f"--from {source.shown} is the working database itself; "
                          "choose another --db")  # fmt: skip
    began, stamp = time.perf_counter(), _now()
    where = f"database {source.name} on {server_address(source.conninfo)}"
    if source.same_server and source.sessions == 0:
        with connect(target, autocommit=True) as conn:
            method = template_copy(conn, source.name, working, end_sessions=False)
            if method is not None:
                mark_database(conn, working)
                return SourceCopy(where, method, "no session on it", time.perf_counter() - began,
                                  stamp, source.bytes)  # fmt: skip
    why = f"{source.sessions} session(s) on it" if source.same_server else "on another server"
    with tempfile.TemporaryDirectory(prefix="vpbench-source-") as folder:
        dump = Path(folder) / "source.dump"
        run_client("pg_dump", ["--format=custom", f"--file={dump}"], source.conninfo)
        _restore(target, dump, working)
    return SourceCopy(where, DUMP, f"{why}: a snapshot-consistent dump",
                      time.perf_counter() - began, stamp, source.bytes)  # fmt: skip


def inspect_dump(dump: Path) -> int:
    """The size of ``dump``, refused unless it is a ``pg_dump`` custom-format file."""
    try:
        with dump.open("rb") as file:
            head = file.read(len(DUMP_MAGIC))
    except OSError as exc:
        raise SourceError(f"cannot read the dump: {exc.strerror}", path=dump) from None
    if head != DUMP_MAGIC:
        raise SourceError(
            "not a pg_dump custom-format file (it does not start with PGDMP)",
            path=dump,
            hint="make one with pg_dump --format=custom",
        )
    return dump.stat().st_size


def copy_from_dump(target: ServerTarget, dump: Path, working: str) -> SourceCopy:
    """Restore the ``pg_dump -Fc`` file ``dump`` into the new database ``working``."""
    size = inspect_dump(dump)
    began, stamp = time.perf_counter(), _now()
    _restore(target, dump, working)
    return SourceCopy(f"dump {dump.resolve()}", RESTORE, "a dump file",
                      time.perf_counter() - began, stamp, size)  # fmt: skip


def _restore(target: ServerTarget, dump: Path, working: str) -> None:
    with connect(target, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(working)))
        mark_database(conn, working)
    try:
        restore_dump(dump, target.for_database(working))
    except BackupError as exc:
        drop_database(target, working)
        raise SourceError(f"restoring {dump.name} failed: {exc.message}", path=dump) from None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
