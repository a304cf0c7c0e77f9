"""The databases vpbench creates and owns: create, mark, check the mark, drop.

A database is vpbench's when its comment carries ``MARK``. Destructive operations on any
other database need ``force=True``: it may hold somebody's data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from vpbench.errors import UnsafeOperationError, UsageError
from vpbench.server.target import ServerTarget, connect

log = logging.getLogger(__name__)

MARK = "vpbench-managed"
MARK_COMMENT = f"{MARK}: benchmark database created by vpbench; safe to drop or reseed"
MAX_NAME_LENGTH = 63


@dataclass(frozen=True)
class DatabaseState:
    """What vpbench knows of a database before it touches it."""

    name: str
    exists: bool
    marked: bool


def check_name(name: str) -> str:
    if not name or len(name.encode()) > MAX_NAME_LENGTH:
        raise UsageError(f"invalid database name {name!r}: use 1 to {MAX_NAME_LENGTH} bytes")
    return name


def database_state(target: ServerTarget, name: str) -> DatabaseState:
    with connect(target, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [name],
        ).fetchone()
    if row is None:
        return DatabaseState(name, exists=False, marked=False)
    comment = row[0] or ""
    return DatabaseState(name, exists=True, marked=comment.startswith(MARK))


def mark_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(MARK_COMMENT)
        )
    )


def ensure_database(target: ServerTarget, name: str) -> DatabaseState:
    """Create (and mark) the database if it does not exist yet; report its state."""
    state = database_state(target, check_name(name))
    if state.exists:
        return state
    with connect(target, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        mark_database(conn, name)
    log.info("created database %s", name)
    return DatabaseState(name, exists=True, marked=True)


def user_table_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'"
    ).fetchone()
    return int(row[0]) if row else 0


def refuse_unless_owned(
    state: DatabaseState, *, operation: str, tables: int, force: bool, hint: str | None = None
) -> None:
    """Refuse ``operation`` on a non-empty database vpbench did not create, unless forced."""
    if state.marked or force or tables == 0:
        return
    lost = " that would be lost" if hint is None else ""
    raise UnsafeOperationError(
        f"refusing to {operation} database {state.name!r}: it was not created by vpbench "
        f"and holds {tables} table(s){lost}",
        hint=hint or "pass --force if its contents may be replaced, or choose another --db",
    )


def drop_database(target: ServerTarget, name: str, *, force: bool = False) -> bool:
    """Drop a vpbench database; returns False if it did not exist."""
    state = database_state(target, check_name(name))
    if not state.exists:
        return False
    if not state.marked and not force:
        raise UnsafeOperationError(
            f"refusing to drop database {name!r}: it was not created by vpbench",
            hint="pass --force to drop it anyway",
        )
    with connect(target, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    log.info("dropped database %s", name)
    return True
