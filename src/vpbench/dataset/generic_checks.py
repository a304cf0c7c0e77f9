"""Integrity checks that hold for any schema, read from the catalog (no table is scanned):
constraints left ``NOT VALID``, indexes left invalid by a failed ``CREATE INDEX
CONCURRENTLY``, foreign keys whose referencing columns lead no whole index (every delete or key
update in the parent then scans the child), and tables without a primary key. Each finding
is one violation; its example is the object's name. vpbench's own schema is left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from vpbench.dataset.audit_result import CheckResult

_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'vpbench') "
    "AND n.nspname NOT LIKE 'pg\\_%'"
)


FOREIGN_KEY_LEADS_INDEX = (
    "i.indisvalid AND i.indpred IS NULL "
    "AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey "
    "AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] <@ k.conkey"
)
"""Foreign key ``k``'s columns lead index ``i`` (a whole, valid index: a partial one cannot
find every referencing row), so a delete in the parent finds the child's rows by it."""


@dataclass(frozen=True)
class _Generic:
    name: str
    description: str
    query: str
    """names of the objects that violate it, one per row, sorted"""


GENERIC = (
    _Generic(
        "not_valid_constraints",
        "constraints left NOT VALID (never checked against the existing rows)",
        "SELECT format('%s.%s', k.conrelid::regclass, k.conname) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE NOT k.convalidated AND {_USER_SCHEMA} ORDER BY 1",
    ),
    _Generic(
        "invalid_indexes",
        "indexes left invalid (a failed CREATE INDEX CONCURRENTLY): unused, yet maintained",
        "SELECT i.indexrelid::regclass::text FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE NOT (i.indisvalid AND i.indisready) AND {_USER_SCHEMA} ORDER BY 1",
    ),
    _Generic(
        "unindexed_foreign_keys",
        "foreign keys whose columns lead no index: a parent delete scans the whole child",
        "SELECT format('%s.%s', k.conrelid::regclass, k.conname) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE k.contype = 'f' AND {_USER_SCHEMA} AND NOT EXISTS ("
        f"SELECT FROM pg_index i WHERE i.indrelid = k.conrelid AND {FOREIGN_KEY_LEADS_INDEX}"
        ") ORDER BY 1",
    ),
    _Generic(
        "tables_without_primary_key",
        "tables without a primary key (rows that cannot be told apart or replicated)",
        "SELECT c.oid::regclass::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {_USER_SCHEMA} "
        "AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = c.oid "
        "AND k.contype = 'p') ORDER BY 1",
    ),
)


def run_generic_checks(conn: psycopg.Connection[Any], sample_size: int) -> list[CheckResult]:
    """Every generic check on ``conn``, each with up to ``sample_size`` examples."""
    results = []
    for check in GENERIC:
        found = [str(row[0]) for row in conn.execute(check.query).fetchall()]
        results.append(CheckResult(check.name, check.description, True, len(found),
                                   tuple(found[:sample_size]), group="generic"))  # fmt: skip
    return results
