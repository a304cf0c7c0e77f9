"""Row counts and content checksums per table: the proof that data is identical or intact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

APPLICATION_TABLES = ("users", "courses", "videos", "quiz_attempts", "reflections")


@dataclass(frozen=True)
class TableSnapshot:
    table: str
    rows: int
    checksum: str
    """sum of each row's md5 (first 60 bits): order-free, and no giant string to build"""


def snapshot_tables(
    conn: psycopg.Connection[Any], tables: tuple[str, ...] = APPLICATION_TABLES
) -> dict[str, TableSnapshot]:
    """Count and checksum each table; identical data gives identical checksums."""
    result: dict[str, TableSnapshot] = {}
    for table in tables:
        query = sql.SQL(
            "SELECT count(*), "
            "coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text "
            "FROM {} AS t"
        ).format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
        assert row is not None
        result[table] = TableSnapshot(table, int(row[0]), str(row[1]))
    return result
