"""What the server really runs: the application's statements in ``pg_stat_statements``.

An application statement is one SELECT, INSERT, UPDATE, DELETE or MERGE that reads or
writes a user table (not only catalogs); utility statements (DDL, VACUUM, COPY, EXPLAIN)
are left out. Each carries the fingerprint of PostgreSQL's own parser (pglast), which
ignores constants and parameter numbers, so a workload statement written with ``:name``
parameters matches the normalised text the server recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import parser

from vpbench.errors import StatisticsUnavailableError
from vpbench.server.target import EMBEDDED, ServerTarget, connect

EXTENSION = "pg_stat_statements"
APPLICATION_STATEMENTS = ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "vpbench")
NOT_LOADED = "55000"
"""SQLSTATE of reading pg_stat_statements when the library is not preloaded"""


@dataclass(frozen=True)
class ServerStatement:
    """One normalised statement as pg_stat_statements recorded it (times in ms)."""

    text: str
    kind: str
    """the parser's node name: SelectStmt, InsertStmt, ..."""
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    fingerprint: str
    tree: dict[str, Any] = field(compare=False, repr=False)
    """the statement's parse tree, ``{kind: node}``, parsed once"""

    @property
    def reads_only(self) -> bool:
        """A SELECT without a data-modifying WITH: safe to repeat while measuring."""
        return self.kind == "SelectStmt" and not _modifies(self.tree)

    def one_line(self, limit: int) -> str:
        """The text on one line, cut to ``limit`` characters."""
        flat = " ".join(self.text.split())
        return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class ServerStatements:
    """The application statements of one database, most total execution time first."""

    where: str
    statements: tuple[ServerStatement, ...]

    @property
    def total_ms(self) -> float:
        return sum(s.total_ms for s in self.statements)

    def share(self, chosen: tuple[ServerStatement, ...] | list[ServerStatement]) -> float:
        """The fraction of the execution time of all application statements in ``chosen``."""
        total = self.total_ms
        return sum(s.total_ms for s in chosen) / total if total else 0.0


def parse_tree(text: str) -> list[dict[str, Any]]:
    """The statements of ``text`` as PostgreSQL's parser gives them (JSON form)."""
    return list(json.loads(parser.parse_sql_json(text)).get("stmts", []))


def fingerprint(text: str) -> str:
    return str(parser.fingerprint(text))


def read_statements(target: ServerTarget, dbname: str) -> ServerStatements:
    """The application statements pg_stat_statements holds for ``dbname``."""
    where = target.describe(dbname)
    with connect(target, dbname, autocommit=True) as conn:
        if not _preloaded(conn):
            raise _unavailable(where, target, "it is not in shared_preload_libraries")
        if _has_extension(conn):
            rows = _statement_rows(conn, dbname, where, target)
        else:
            with connect(target, autocommit=True) as maintenance:
                if not _has_extension(maintenance):
                    _create_extension(maintenance, where, target)
                rows = _statement_rows(maintenance, dbname, where, target)
    found = [s for s in (_classified(*row) for row in rows) if s is not None]
    found.sort(key=lambda s: (-s.total_ms, s.text))
    return ServerStatements(where, tuple(found))


def _preloaded(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return EXTENSION in [name.strip() for name in str(row[0] if row else "").split(",")]


def _has_extension(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [EXTENSION]).fetchone()
    return row is not None


def _create_extension(conn: psycopg.Connection[Any], where: str, target: ServerTarget) -> None:
    try:
        conn.execute(f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}")
    except psycopg.Error as exc:
        raise _unavailable(where, target, str(exc).strip().splitlines()[0]) from None


def _statement_rows(
    conn: psycopg.Connection[Any], dbname: str, where: str, target: ServerTarget
) -> list[tuple[Any, ...]]:
    try:
        return conn.execute(
            "SELECT query, calls, total_exec_time, mean_exec_time, rows "
            f"FROM {EXTENSION} "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND toplevel",
            [dbname],
        ).fetchall()
    except psycopg.Error as exc:
        if exc.sqlstate == NOT_LOADED:
            raise _unavailable(where, target, "it is not loaded") from None
        raise StatisticsUnavailableError(
            f"cannot read {EXTENSION} on {where}: {str(exc).strip().splitlines()[0]}",
            sqlstate=exc.sqlstate,
        ) from None


def _unavailable(where: str, target: ServerTarget, why: str) -> StatisticsUnavailableError:
    how = (
        "restart the embedded server, which loads it: vpbench db stop && vpbench db start"
        if target.source == EMBEDDED
        else "add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf, "
        "restart PostgreSQL, and let the app run for a while"
    )
    return StatisticsUnavailableError(f"{EXTENSION} is not available on {where}: {why}", hint=how)


def _classified(
    text: str, calls: int, total_ms: float, mean_ms: float, rows: int
) -> ServerStatement | None:
    """The statement if it is an application statement, else None."""
    try:
        (statement,) = parse_tree(text)
    except (parser.ParseError, ValueError):
        return None
    ((kind, node),) = statement["stmt"].items()
    if kind not in APPLICATION_STATEMENTS:
        return None
    relations = list(relations_in(node))
    if not relations or all(_is_system(r) for r in relations):
        return None
    return ServerStatement(text, kind, int(calls), float(total_ms), float(mean_ms), int(rows),
                           fingerprint(text), statement["stmt"])  # fmt: skip


def walk(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every (field or node name, value) pair of a parse tree, depth first."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key, value
            yield from walk(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from walk(item)


def relations_in(tree: Any) -> Iterator[dict[str, Any]]:
    """Every RangeVar (a table or view named in FROM, INSERT INTO, UPDATE, ...) in a tree.
    A RangeVar is tagged where any node may stand, bare where only one may (the target
    ``relation`` of INSERT, UPDATE, DELETE and MERGE)."""
    for key, value in walk(tree):
        if key == "RangeVar" or (
            key == "relation" and isinstance(value, dict) and "relname" in value
        ):
            yield value


def _is_system(relation: dict[str, Any]) -> bool:
    return relation.get("schemaname") in SYSTEM_SCHEMAS or str(
        relation.get("relname", "")
    ).startswith("pg_")


def _modifies(tree: Any) -> bool:
    """Whether a tree holds an INSERT, UPDATE, DELETE or MERGE (e.g. in a WITH)."""
    return any(key in APPLICATION_STATEMENTS[1:] for key, _ in walk(tree))
