"""The checks ``steps`` runs around each migration: storage cost, result equivalence and
row accounting. Each is a function of one or two connections."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import sql

from vpbench.dataset.generic_checks import FOREIGN_KEY_LEADS_INDEX
from vpbench.migrations.statements import keywords
from vpbench.workload.sampling import ParameterPool, ParameterStream
from vpbench.workload.spec import Query, SqlText

QUARANTINE_TABLES = {"quiz_attempts": "quarantine.quiz_attempts",
                     "reflections": "quarantine.reflections"}  # fmt: skip


def _orders_rows(query: str) -> bool:
    """Whether ``query`` has an ORDER BY (then its rows compare in order, else as sets);
    read by PostgreSQL's scanner, so an "order by" in a comment or a string does not count."""
    words = keywords(query)
    return ("ORDER", "BY") in pairwise(words)


@dataclass(frozen=True)
class RelationSize:
    schema: str
    name: str
    kind: str
    """"table", "index" or "view" """
    table: str
    """the table an index belongs to (the relation itself for a table)"""
    bytes: int
    foreign_keys: tuple[str, ...] = ()
    """for an index, the foreign keys of its table whose columns lead it: a delete or key
    update in their parent finds the referencing rows by it"""


@dataclass(frozen=True)
class RelationCost:
    """A table or index the step added, removed or resized."""

    name: str
    kind: str
    bytes_before: int
    bytes_after: int
    table_bytes_after: int
    table: str = ""
    """the table an index belongs to (the relation itself for a table), qualified"""
    foreign_keys: tuple[str, ...] = ()
    """for an index, the foreign keys it serves (see ``RelationSize``)"""

    @property
    def added_bytes(self) -> int:
        return self.bytes_after - self.bytes_before

    @property
    def share_of_table(self) -> float | None:
        return self.bytes_after / self.table_bytes_after if self.table_bytes_after else None


def relation_sizes(conn: psycopg.Connection[Any]) -> dict[str, RelationSize]:
    """Tables and indexes of the application's schemas, by qualified name."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind, coalesce(t.relname, c.relname), "
        "pg_relation_size(c.oid), coalesce(fk.names, '{}') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
        "LEFT JOIN pg_class t ON t.oid = i.indrelid "
        "LEFT JOIN LATERAL (SELECT array_agg(k.conname::text ORDER BY k.conname) AS names "
        "FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = i.indrelid "
        f"AND {FOREIGN_KEY_LEADS_INDEX}) fk ON true "
        "WHERE c.relkind IN ('r', 'i', 'm', 'p') AND n.nspname !~ '^pg_' "
        "AND n.nspname NOT IN ('information_schema', 'vpbench')"
    ).fetchall()
    kinds = {"r": "table", "p": "table", "m": "table", "i": "index"}
    return {
        f"{r[0]}.{r[1]}": RelationSize(
            r[0], r[1], kinds[r[2]], f"{r[0]}.{r[3]}", int(r[4]), tuple(r[5])
        )
        for r in rows
    }


def relation_costs(
    before: dict[str, RelationSize], after: dict[str, RelationSize]
) -> tuple[RelationCost, ...]:
    costs = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is not None and new is not None and old.bytes == new.bytes:
            continue
        known = new if new is not None else old
        assert known is not None
        table_after = after[known.table].bytes if known.table in after else 0
        costs.append(RelationCost(name, known.kind, old.bytes if old else 0,
                                  new.bytes if new else 0, table_after, known.table,
                                  known.foreign_keys))  # fmt: skip
    return tuple(costs)


def quarantined_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows held in quarantine, per application table."""
    counts = {}
    for table, quarantine in QUARANTINE_TABLES.items():
        exists = conn.execute("SELECT to_regclass(%s)", [quarantine]).fetchone()
        if exists is None or exists[0] is None:
            counts[table] = 0
            continue
        schema, name = quarantine.split(".")
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
        ).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


@dataclass(frozen=True)
class Equivalence:
    query: str
    same: bool
    compared_columns: tuple[str, ...]
    detail: str


def _normalise(value: Any) -> Any:
    """Compare values, not representations: a uuid and its text, jsonb and its text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return None if value is None else str(value)


def _result(
    conn: psycopg.Connection[Any], sql_text: SqlText, params: dict[str, Any]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = conn.execute(sql_text.runnable, params)
    names = [c.name for c in cursor.description or ()]
    return names, cursor.fetchall()


def compare_results(
    before: psycopg.Connection[Any],
    after: psycopg.Connection[Any],
    queries: Sequence[Query],
    pools: dict[str, ParameterPool],
    applied_before: Sequence[str],
    applied_after: Sequence[str],
    *,
    draws: int = 3,
    seed: int = 1,
) -> tuple[Equivalence, ...]:
    """Run each query with the same parameters on both states and compare the results on
    the columns both return (as multisets unless the query orders its rows)."""
    outcomes = []
    for query in queries:
        _, old_sql = query.sql_for(applied_before)
        _, new_sql = query.sql_for(applied_after)
        stream = ParameterStream(pools, set(old_sql.params) | set(new_sql.params), seed,
                                 f"{query.name}/equivalence")  # fmt: skip
        same, detail = True, ""
        shared: tuple[str, ...] = ()
        for draw in range(draws):
            params = stream.draw()
            try:
                old_names, old_rows = _result(before, old_sql, params)
                new_names, new_rows = _result(after, new_sql, params)
            except psycopg.Error as exc:
                same, detail = False, f"failed: {str(exc).strip().splitlines()[0]}"
                break
            shared = tuple(n for n in old_names if n in new_names)
            pick_old = [old_names.index(n) for n in shared]
            pick_new = [new_names.index(n) for n in shared]
            old = [tuple(_normalise(r[i]) for i in pick_old) for r in old_rows]
            new = [tuple(_normalise(r[i]) for i in pick_new) for r in new_rows]
            if not _orders_rows(new_sql.source):
                old, new = sorted(old, key=repr), sorted(new, key=repr)
            if old != new:
                same = False
                differ = "" if len(old_rows) != len(new_rows) else ", values differ"
                detail = f"draw {draw + 1}: {len(old_rows)} rows before, {len(new_rows)} after"
                detail += differ
                break
        outcomes.append(Equivalence(query.name, same, shared, detail))
    return tuple(outcomes)
