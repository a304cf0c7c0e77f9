"""Row counts and content checksums per table: the proof that data is identical or intact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

APPLICATION_TABLES = ("users", "courses", "videos", "quiz_attempts", "reflections")
"""the reference schema's tables"""

_USER_TABLES = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'vpbench')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1
"""


def user_tables(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """Every table of the database's own schemas (vpbench's ledger left out), as
    ``regclass`` names them: the tables whose rows a step must keep, whatever the schema."""
    return tuple(str(row[0]) for row in conn.execute(_USER_TABLES).fetchall())


@dataclass(frozen=True)
class TableSnapshot:
    table: str
    rows: int
    checksum: str
    """sum of each row's md5 (first 60 bits): free of row order and of column order (a
    column dropped and added back comes last), and no giant string to build"""


_COLUMNS_BY_NAME = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped
ORDER BY attname
"""


def snapshot_tables(
    conn: psycopg.Connection[Any], tables: tuple[str, ...] = APPLICATION_TABLES
) -> dict[str, TableSnapshot]:
    """Count and checksum each table; identical data gives identical checksums."""
    result: dict[str, TableSnapshot] = {}
    for table in tables:
        names = [str(r[0]) for r in conn.execute(_COLUMNS_BY_NAME, [table]).fetchall()]
        row_text = sql.SQL("ROW({})::text").format(
            sql.SQL(", ").join(sql.Identifier("t", name) for name in names)
        )
        query = sql.SQL(
            "SELECT count(*), "
            "coalesce(sum(('x' || left(md5({}), 15))::bit(60)::bigint), 0)::text "
            "FROM {} AS t"
        ).format(row_text, _table(table))
        row = conn.execute(query).fetchone()
        assert row is not None
        result[table] = TableSnapshot(table, int(row[0]), str(row[1]))
    return result


_TABLE_KEY = """
SELECT c.relfilenode::text || '/' || (s.n_tup_ins + s.n_tup_upd + s.n_tup_del)::text || '/' ||
       (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                          ORDER BY a.attnum)
        FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = to_regclass(%s)
"""


def table_keys(
    conn: psycopg.Connection[Any], tables: tuple[str, ...] = APPLICATION_TABLES
) -> dict[str, str | None]:
    """What changes whenever a table's contents can: its file (a rewrite, TRUNCATE), its
    columns and their types, and the rows the server counted inserted, updated or deleted
    (rolled back or not). Two equal keys mean the same contents, so a snapshot can be
    reused. None (always read again) for a missing table, and before PostgreSQL 15, whose
    counters may lag behind the last writes. The writing sessions must have flushed their
    statistics (``vpbench.server.maintenance.flush_statistics``) or ended."""
    if conn.info.server_version < 150000:
        return dict.fromkeys(tables)
    keys: dict[str, str | None] = {}
    for table in tables:
        row = conn.execute(_TABLE_KEY, [table]).fetchone()
        keys[table] = str(row[0]) if row and row[0] is not None else None
    return keys


def row_counts(
    conn: psycopg.Connection[Any], tables: tuple[str, ...] = APPLICATION_TABLES
) -> dict[str, int]:
    """Rows per table, without the checksum's pass over every row's text."""
    counts = {}
    for table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(table)))
        found = row.fetchone()
        counts[table] = int(found[0]) if found else 0
    return counts


def _table(name: str) -> sql.Composable:
    """A table as ``regclass`` names it (``users``, ``quarantine.quiz_attempts``, quoted
    where it needs to be): already an SQL identifier, from the catalog."""
    return sql.SQL(name)


_APPLICATION = "{0} !~ '^pg_' AND {0} NOT IN ('information_schema', 'vpbench')"
SCHEMA_QUERIES = {
    "schemas": "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
    f"WHERE {_APPLICATION.format('nspname')} ORDER BY 1",
    "relations": "SELECT n.nspname, c.relname, c.relkind, c.relacl::text, c.reloptions::text, "
    "obj_description(c.oid, 'pg_class') FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE {_APPLICATION.format('n.nspname')} ORDER BY 1, 2",
    # In attnum order: column order is part of the shape. Some server builds stamp columns
    # with a "pg_attver=<n>" option that changes on every ALTER; that is not the schema.
    "columns": "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
    "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), "
    "ARRAY(SELECT o FROM unnest(a.attoptions) AS o WHERE o !~ '^pg_attver=')::text, "
    "col_description(c.oid, a.attnum) FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    f"WHERE {_APPLICATION.format('n.nspname')} AND c.relkind IN ('r', 'p', 'v', 'm') "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2, a.attnum",
    "constraints": "SELECT n.nspname, k.conrelid::regclass::text, k.conname, k.contype, "
    "pg_get_constraintdef(k.oid), k.convalidated FROM pg_constraint k "
    "JOIN pg_namespace n ON n.oid = k.connamespace "
    f"WHERE {_APPLICATION.format('n.nspname')} ORDER BY 1, 2, 3",
    "indexes": "SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE {_APPLICATION.format('n.nspname')} ORDER BY 1, 2",
    "functions": "SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid), "
    "p.provolatile, p.proparallel FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    f"WHERE {_APPLICATION.format('n.nspname')} ORDER BY 1",
    "views": "SELECT schemaname, viewname, definition FROM pg_views "
    f"WHERE {_APPLICATION.format('schemaname')} ORDER BY 1, 2",
}


@dataclass(frozen=True)
class SchemaShape:
    """The application schema as the catalogs describe it (vpbench's own schema excluded)."""

    parts: dict[str, tuple[tuple[Any, ...], ...]]

    @property
    def fingerprint(self) -> str:
        text = json.dumps({k: [list(map(str, r)) for r in v] for k, v in self.parts.items()})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: SchemaShape) -> list[str]:
        """What ``other`` has or lacks compared with this shape, one line per catalog row."""
        lines = []
        for part, rows in self.parts.items():
            mine, theirs = set(rows), set(other.parts.get(part, ()))
            lines += [f"{part}: lost {row}" for row in sorted(mine - theirs, key=str)]
            lines += [f"{part}: gained {row}" for row in sorted(theirs - mine, key=str)]
        return lines


def schema_shape(conn: psycopg.Connection[Any]) -> SchemaShape:
    return SchemaShape(
        {name: tuple(conn.execute(query).fetchall()) for name, query in SCHEMA_QUERIES.items()}
    )
