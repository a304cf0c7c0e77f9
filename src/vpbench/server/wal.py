"""How much write-ahead log was written: by the whole server, or by one session."""

from __future__ import annotations

from typing import Any, Literal

import psycopg

WalScope = Literal["session", "server"]


def wal_insert_position(conn: psycopg.Connection[Any]) -> int:
    """The WAL insert position in bytes since 0/0 (every session's WAL counts, not only
    ``conn``'s)."""
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')").fetchone()
    assert row is not None
    return int(row[0])


class WalMeter:
    """WAL written on ``conn`` (autocommit) from the meter's start until ``written``: that
    session's own on PostgreSQL 18 and later (``pg_stat_get_backend_wal``, parallel workers
    included), the whole server's before (autovacuum and other sessions count too)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.scope: WalScope = "session" if conn.info.server_version >= 180000 else "server"
        self.start = self._reading()

    def written(self) -> int:
        return self._reading() - self.start

    def _reading(self) -> int:
        if self.scope == "server":
            return wal_insert_position(self.conn)
        # A backend's counters reach the statistics when its transaction ends.
        self.conn.execute("SELECT pg_stat_force_next_flush()")
        row = self.conn.execute(
            "SELECT wal_bytes FROM pg_stat_get_backend_wal(pg_backend_pid())"
        ).fetchone()
        assert row is not None
        return int(row[0])
