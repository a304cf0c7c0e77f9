"""``vpbench capture``: a workload file from the statements the server really runs.

pg_stat_statements records each statement with its constants replaced by ``$n``. Each
``$n`` becomes a named parameter; PostgreSQL's own parser (pglast) says what it is
compared with: a column (``col = $1``, ``col IN ($1, $2)``, ``BETWEEN``, an INSERT's or
UPDATE's target column) gives a sampler of that column's values, a LIMIT or OFFSET a fixed
value, anything else a fixed value of the type the server infers for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql as pgsql

from vpbench.server.target import ServerTarget, connect, error_message, untracked
from vpbench.workload.placeholders import compared_columns, limit_parameters, renumbered
from vpbench.workload.preflight import prepare_failure
from vpbench.workload.spec import parse_sql
from vpbench.workload.statements import (
    ServerStatement,
    ServerStatements,
    read_statements,
    relations_in,
)

POOL = 200
"""values a captured column sampler draws from"""
SAMPLE_ROWS = 200_000
"""a source scans about this many rows of a big table (TABLESAMPLE), all of a small one"""
LIMIT_VALUE, OFFSET_VALUE = 20, 0
TRIAL_TIMEOUT = "10s"
"""the longest one trial of a captured statement runs at capture time"""
TRIAL_BUDGET_S = 10.0
"""how long a statement's trials at capture may take in all"""
# Fixed values by the type the server infers for a parameter compared with no column.
VALUES_BY_TYPE: dict[int, Any] = {
    16: True, 20: 1, 21: 1, 23: 1, 700: 1.0, 701: 1.0, 1700: 1,
    1082: "2026-01-01", 1114: "2026-01-01 00:00:00", 1184: "2026-01-01 00:00:00+00",
    2950: "00000000-0000-0000-0000-000000000000",
}  # fmt: skip
VERBS = {"SelectStmt": "select", "InsertStmt": "insert", "UpdateStmt": "update",
         "DeleteStmt": "delete", "MergeStmt": "merge"}  # fmt: skip


@dataclass(frozen=True)
class CapturedParameter:
    """A ``[params.NAME]`` entry: a sampler over a column, or one fixed value."""

    name: str
    note: str
    source: str | None = None
    value: Any = None


@dataclass(frozen=True)
class CapturedQuery:
    name: str
    statement: ServerStatement
    sql: str
    """the statement with ``:name`` parameters"""
    tried: int = 0
    """executions at capture, with as many values of its parameters' pools (all of them,
    unless ``TRIAL_BUDGET_S`` ran out first)"""
    values: int = 0
    """the values its parameters' pools hold (the largest pool)"""


@dataclass(frozen=True)
class Capture:
    statements: ServerStatements
    queries: tuple[CapturedQuery, ...]
    parameters: tuple[CapturedParameter, ...]
    left_out: tuple[tuple[ServerStatement, str], ...]
    """statements among the top that the file does not hold, and why"""
    top: int
    min_calls: int
    captured_at: datetime = field(default_factory=lambda: datetime.now().astimezone())

    @property
    def share(self) -> float:
        return self.statements.share([q.statement for q in self.queries])

    def to_toml(self) -> str:
        return _render(self)


def capture_workload(
    target: ServerTarget, dbname: str, *, top: int = 20, min_calls: int = 2
) -> Capture:
    """The top ``top`` read statements by total execution time with ``min_calls`` calls."""
    found = read_statements(target, dbname)
    ranked = [s for s in found.statements if s.calls >= min_calls][:top]
    queries: list[CapturedQuery] = []
    parameters: dict[str, CapturedParameter] = {}
    left_out: list[tuple[ServerStatement, str]] = []
    with connect(target, dbname, autocommit=True) as conn:
        binder = _Binder(conn)
        pools: dict[str, list[Any]] = {}
        for statement in ranked:
            if not statement.reads_only:
                left_out.append((statement, "it writes (a benchmark repeats every statement)"))
                continue
            name = _unique(f"{VERBS[statement.kind]}_{_first_table(statement)}",
                           {q.name for q in queries})  # fmt: skip
            bound = binder.bind(statement, name)
            if isinstance(bound, str):
                left_out.append((statement, bound))
                continue
            text, used = bound
            trial = _trial(conn, text, used, pools)
            if isinstance(trial, str):
                left_out.append((statement, trial))
                continue
            for parameter in used:
                parameters.setdefault(parameter.name, parameter)
            queries.append(CapturedQuery(name, statement, text, *trial))
    return Capture(found, tuple(queries), tuple(parameters.values()), tuple(left_out), top,
                   min_calls)  # fmt: skip


def _trial(
    conn: psycopg.Connection[Any],
    text: str,
    parameters: list[CapturedParameter],
    pools: dict[str, list[Any]],
) -> str | tuple[int, int]:
    """Run the statement, read-only and rolled back, with each value of its parameters'
    pools in turn (the pools ``vpbench run`` will draw from: the source's first ``POOL``
    rows), until every value ran or ``TRIAL_BUDGET_S`` is spent: why the file could not run
    it, or (executions, values). (pg_stat_statements kept no constant, so an inferred
    parameter can make a statement fail for some values, e.g. a column of text cast to an
    integer that is sometimes empty.)"""
    for parameter in parameters:
        if parameter.source is not None and parameter.name not in pools:
            with conn.transaction():
                untracked(conn)
                found = conn.execute(parameter.source).fetchmany(POOL)
            pools[parameter.name] = [row[0] for row in found]
        if parameter.source is not None and not pools[parameter.name]:
            return f"its parameter :{parameter.name} has no values to draw"
    drawn = {p.name: pools[p.name] if p.source is not None else [p.value] for p in parameters}
    values = max((len(v) for v in drawn.values()), default=1)
    began, tried = time.perf_counter(), 0
    runnable = parse_sql(text).runnable
    for index in range(values):
        chosen = {name: pool[index % len(pool)] for name, pool in drawn.items()}
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(f"SET LOCAL statement_timeout = '{TRIAL_TIMEOUT}'")
                untracked(conn)
                conn.execute(runnable, chosen)
        except psycopg.errors.QueryCanceled:
            return tried + 1, values  # slow, but it runs: no more trials
        except psycopg.Error as exc:
            shown = ", ".join(f":{k} = {v!r}" for k, v in chosen.items())
            return (f"with the inferred parameters it fails for {shown} (value {index + 1} of "
                    f"{values}): {error_message(exc)}")  # fmt: skip
        tried += 1
        if time.perf_counter() - began > TRIAL_BUDGET_S:
            break
    return tried, values


class _Binder:
    """Turns one statement's ``$n`` into named parameters with samplers."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._columns: dict[tuple[str | None, str], set[str]] = {}

    def bind(
        self, statement: ServerStatement, query: str
    ) -> tuple[str, list[CapturedParameter]] | str:
        """(SQL with ``:name`` parameters, its parameters), or why it cannot be captured."""
        failure = prepare_failure(self.conn, statement.text)
        if failure is not None:
            return f"the server cannot prepare it here: {failure[0]}"
        described = self.conn.pgconn.describe_prepared(b"")
        types = {n + 1: described.param_type(n) for n in range(described.nparams)}
        tree = statement.tree
        tables = self._tables(tree)
        compared = dict(compared_columns(tree))
        limits = dict(limit_parameters(tree))
        names: dict[int, CapturedParameter] = {}
        taken: set[str] = set()
        for number in sorted(types):
            column, as_array = compared.get(number, (None, False))
            resolved = self._resolve(column, tables) if column else None
            if resolved is not None:
                schema, table, col = resolved
                names[number] = self._column_sampler(schema, table, col, taken, as_array)
            elif number in limits:
                clause = limits[number]
                value = LIMIT_VALUE if clause == "LIMIT" else OFFSET_VALUE
                names[number] = CapturedParameter(
                    _unique(f"{query}_{clause.lower()}", taken),
                    f"{clause}: pg_stat_statements kept no constant; {value} chosen",
                    value=value,
                )
            else:
                value = VALUES_BY_TYPE.get(types[number], "")
                names[number] = CapturedParameter(
                    _unique(f"{query}_p{number}", taken),
                    f"${number} is compared with no column: a fixed value of its type; edit it",
                    value=value,
                )
            taken.add(names[number].name)
        named = renumbered(statement.text, tree, {n: p.name for n, p in names.items()})
        return named, list(names.values())

    def _tables(self, tree: Any) -> dict[str, tuple[str | None, str]]:
        tables: dict[str, tuple[str | None, str]] = {}
        for relation in relations_in(tree):
            key = (relation.get("schemaname"), str(relation["relname"]))
            tables.setdefault(str(relation["relname"]), key)
            alias = (relation.get("alias") or {}).get("aliasname")
            if alias:
                tables[str(alias)] = key
        return tables

    def _resolve(
        self, fields: tuple[str, ...], tables: dict[str, tuple[str | None, str]]
    ) -> tuple[str | None, str, str] | None:
        if len(fields) >= 2 and fields[-2] in tables:
            schema, table = tables[fields[-2]]
            return (
                (schema, table, fields[-1])
                if fields[-1] in self._columns_of(schema, table)
                else None
            )
        if len(fields) == 1:
            for schema, table in dict.fromkeys(tables.values()):
                if fields[0] in self._columns_of(schema, table):
                    return schema, table, fields[0]
        return None

    def _columns_of(self, schema: str | None, table: str) -> set[str]:
        key = (schema, table)
        if key not in self._columns:
            rows = self.conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attnum > 0 AND NOT attisdropped",
                [_relation(schema, table).as_string(self.conn)],
            ).fetchall()
            self._columns[key] = {str(r[0]) for r in rows}
        return self._columns[key]

    def _column_sampler(
        self, schema: str | None, table: str, column: str, taken: set[str], as_array: bool
    ) -> CapturedParameter:
        name = _unique(f"{table}_{column}{'_array' if as_array else ''}", taken)
        relation = _relation(schema, table)
        col = pgsql.Identifier(column)
        row = self.conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
            [relation.as_string(self.conn)],
        ).fetchone()
        rows = float(row[0]) if row and row[0] is not None else 0.0
        sample = pgsql.SQL("")
        if rows > 2 * SAMPLE_ROWS:
            percent = max(0.01, round(100 * SAMPLE_ROWS / rows, 2))
            sample = pgsql.SQL(f" TABLESAMPLE SYSTEM ({percent:g}) REPEATABLE (1)")
        value = pgsql.SQL("ARRAY[{col}]::text" if as_array else "{col}::text").format(col=col)
        source = pgsql.SQL(
            "SELECT {value} AS {name} FROM {relation}{sample} WHERE {col} IS NOT NULL "
            "GROUP BY {col} ORDER BY md5({col}::text)"
        ).format(value=value, col=col, name=pgsql.Identifier(name), relation=relation,
                 sample=sample)  # fmt: skip
        where = f"{schema}.{table}.{column}" if schema else f"{table}.{column}"
        note = f"compared with {where}: " + (
            "arrays of one of its values" if as_array else "its values"
        )
        return CapturedParameter(name, note, source=source.as_string(self.conn))


def _relation(schema: str | None, table: str) -> pgsql.Identifier:
    return pgsql.Identifier(*([schema] if schema else []), table)


def _first_table(statement: ServerStatement) -> str:
    relation = next(relations_in(statement.tree), None)
    return str(relation["relname"]) if relation else "statement"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


# -- the file ---------------------------------------------------------------------------


def _render(capture: Capture) -> str:
    share = capture.share
    count = len(capture.statements.statements)
    lines = [
        f"# Captured by `vpbench capture` from pg_stat_statements on {capture.statements.where}",
        f"# at {capture.captured_at:%Y-%m-%d %H:%M %Z}: the top {capture.top} statements by total "
        f"execution time with at least {capture.min_calls} calls.",
        f"# These {len(capture.queries)} queries cover {share:.1%} of the execution time of the "
        f"{count} application statements recorded for this database.",
        "# pg_stat_statements replaced every constant with $n: each is a parameter below, drawn",
        "# from the values of the column it is compared with, or a fixed value (edit to taste).",
    ]
    for statement, why in capture.left_out:
        share_one = capture.statements.share([statement])
        lines.append(f"# Left out ({share_one:.1%} of the time): {statement.one_line(80)} — {why}")
    lines += ["", "[workload]", f"description = {_basic(_description(capture))}", ""]
    for parameter in capture.parameters:
        lines += [f"[params.{parameter.name}]", f"# {parameter.note}"]
        if parameter.source is not None:
            lines += [f"source = {_basic(parameter.source)}", f"pool = {POOL}"]
        else:
            lines.append(f"value = {_scalar(parameter.value)}")
        lines.append("")
    for query in capture.queries:
        lines += [
            f"[queries.{query.name}]",
            f"description = {_basic(_query_description(query, capture.statements))}",
            f"sql = {_multiline(query.sql)}",
            "",
        ]
    return "\n".join(lines)


def _description(capture: Capture) -> str:
    return (
        f"The server's top {len(capture.queries)} read statements by total execution time "
        f"({capture.share:.1%} of it), captured {capture.captured_at:%Y-%m-%d}."
    )


def _query_description(query: CapturedQuery, statements: ServerStatements) -> str:
    statement = query.statement
    every = query.tried >= query.values
    tried = f" Ran at capture with {'every one' if every else query.tried} of its {query.values}"
    tried += " parameter values."
    return (
        f"{statements.share([statement]):.1%} of the execution time: {statement.calls} calls, "
        f"mean {statement.mean_ms:.2f} ms, {statement.rows / max(statement.calls, 1):.1f} rows."
        + tried
    )


def _basic(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _multiline(text: str) -> str:
    if "'''" in text or any(ord(c) < 32 and c not in "\n\t" for c in text):
        return _basic(text)
    return f"'''\n{text.strip()}\n'''"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _basic(str(value))
