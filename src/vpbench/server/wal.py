"""Where the server's write-ahead log is: WAL written between two readings is their difference."""

from __future__ import annotations

from typing import Any

import psycopg


def wal_insert_position(conn: psycopg.Connection[Any]) -> int:
    """The WAL insert position in bytes since 0/0 (every session's WAL counts, not only
    ``conn``'s)."""
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')").fetchone()
    assert row is not None
    return int(row[0])
