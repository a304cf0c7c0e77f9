"""The ledger: which migrations a database has applied, with their checksums, in
``vpbench.migrations``. Its rows change in the same transaction as the step they record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from vpbench.migrations.folder import Migration

LEDGER_TABLE = "vpbench.migrations"
LEDGER_SQL = f"""
CREATE SCHEMA IF NOT EXISTS vpbench;
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
    id          text             PRIMARY KEY,
    checksum    text             NOT NULL,
    title       text             NOT NULL,
    applied_at  timestamptz      NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL
);
"""


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    checksum: str
    applied_at: datetime


def ledger(conn: psycopg.Connection[Any]) -> dict[str, LedgerEntry]:
    """The ledger's rows by migration id; empty if there is no ledger yet."""
    if not _ledger_exists(conn):
        return {}
    rows = conn.execute(
        f"SELECT id, checksum, applied_at FROM {LEDGER_TABLE} ORDER BY applied_at, id"
    )
    return {r[0]: LedgerEntry(r[0], r[1], r[2]) for r in rows.fetchall()}


def applied_migrations(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """Ids recorded in the ledger, in the order applied; empty if there is no ledger yet."""
    return tuple(ledger(conn))


def ensure_ledger(conn: psycopg.Connection[Any]) -> None:
    """Create the ledger if the database has none yet (``record_step`` would, as part of the
    first step, and its WAL and time would count as the step's). Looked up first: an
    existing one is left without a word (no "already exists, skipping" NOTICE)."""
    if not _ledger_exists(conn):
        with conn.transaction():  # a savepoint inside a step's transaction
            conn.execute("SET LOCAL client_min_messages = warning")  # schema vpbench exists
            conn.execute(LEDGER_SQL)


def record_step(
    conn: psycopg.Connection[Any], migration: Migration, direction: str, seconds: float
) -> None:
    """Add (``up``) or remove (``down``) the migration's row, creating the ledger if needed."""
    ensure_ledger(conn)
    if direction == "up":
        conn.execute(
            f"INSERT INTO {LEDGER_TABLE} (id, checksum, title, duration_ms) "
            "VALUES (%s, %s, %s, %s)",
            [migration.id, migration.checksum, migration.title, seconds * 1000],
        )
    else:
        conn.execute(f"DELETE FROM {LEDGER_TABLE} WHERE id = %s", [migration.id])


def _ledger_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", [LEDGER_TABLE]).fetchone()
    return row is not None and row[0] is not None
