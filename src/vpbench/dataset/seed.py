"""Seed a database with the legacy reference schema and generated data.

The whole reseed (drop, create, COPY, ledger row) is one transaction: an error or Ctrl-C
rolls it back and leaves the database exactly as it was, never half-loaded. Tables created
in the same transaction are loaded with ``COPY ... FREEZE``. After the commit the database
is settled (VACUUM (ANALYZE), see ``vpbench.server.maintenance``): otherwise autovacuum would
re-analyse every table a minute later and plans measured before and after that could
differ.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from vpbench import __version__
from vpbench.dataset.fixtures import legacy_schema_sql
from vpbench.dataset.generate import TableSpec, build_dataset
from vpbench.dataset.profiles import DirtyRates, Profile
from vpbench.errors import SeedError
from vpbench.server.databases import (
    ensure_database,
    mark_database,
    refuse_unless_owned,
    user_table_count,
)
from vpbench.server.maintenance import flush_statistics, settle
from vpbench.server.target import ServerTarget, connect

log = logging.getLogger(__name__)

SeedProgress = Callable[[str, int, int], None]
"""Called with (table, rows loaded so far, rows to load) after each chunk."""

SEED_INFO_SQL = """
CREATE SCHEMA vpbench;
COMMENT ON SCHEMA vpbench IS 'vpbench bookkeeping; not part of the application schema';
CREATE TABLE vpbench.seed_info (
    profile         text        NOT NULL,
    seed            bigint      NOT NULL,
    dirty_rates     jsonb       NOT NULL,
    dirty_counts    jsonb       NOT NULL,
    row_counts      jsonb       NOT NULL,
    vpbench_version text        NOT NULL,
    seeded_at       timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class TableLoad:
    table: str
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class SeedResult:
    database: str
    profile: str
    seed: int
    tables: tuple[TableLoad, ...]
    dirty_counts: dict[str, int]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def seed_database(
    target: ServerTarget,
    dbname: str,
    profile: Profile,
    *,
    seed: int = 1,
    dirty: DirtyRates | None = None,
    force: bool = False,
    progress: SeedProgress | None = None,
) -> SeedResult:
    """Replace ``dbname``'s contents with a freshly generated legacy database."""
    dirty = dirty or DirtyRates()
    state = ensure_database(target, dbname)
    started = time.perf_counter()
    dataset = build_dataset(profile, seed, dirty)
    loads: list[TableLoad] = []
    dirty_counts = dict.fromkeys(dirty.knobs(), 0)
    with connect(target, dbname) as conn:
        refuse_unless_owned(state, operation="seed", tables=user_table_count(conn), force=force)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            _recreate_schemas(conn)
            for table in dataset.tables:
                loads.append(_load_table(conn, table, seed, dirty_counts, progress))
            _write_ledger(conn, profile, seed, dirty, dirty_counts, loads)
            if not state.marked:
                mark_database(conn, dbname)
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise SeedError(
                f"seeding {dbname!r} failed and was rolled back: {exc}", sqlstate=exc.sqlstate
            ) from exc
        conn.autocommit = True
        flush_statistics(conn)
        settle(conn)
    seconds = time.perf_counter() - started
    log.info("seeded %s (%s, seed %d) in %.1fs", dbname, profile.name, seed, seconds)
    return SeedResult(dbname, profile.name, seed, tuple(loads), dirty_counts, seconds)


def _recreate_schemas(conn: psycopg.Connection[Any]) -> None:
    """Drop every schema (public, vpbench's ledger, quarantine and archive ones that
    migrations made) and start from the legacy schema alone."""
    schemas = conn.execute(
        "SELECT nspname FROM pg_namespace "
        "WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"
    ).fetchall()
    for (schema,) in schemas:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    conn.execute("CREATE SCHEMA public")
    conn.execute(legacy_schema_sql())
    conn.execute(SEED_INFO_SQL)


def _load_table(
    conn: psycopg.Connection[Any],
    table: TableSpec,
    seed: int,
    dirty_counts: dict[str, int],
    progress: SeedProgress | None,
) -> TableLoad:
    started = time.perf_counter()
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FREEZE)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, table.columns))
    )
    loaded = 0
    if progress:
        progress(table.name, 0, table.rows)
    # The queued writer sends on a thread, so the next chunk is generated while the server
    # parses the previous one.
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        for chunk in table.chunks(seed):
            copy.write(chunk.text)
            loaded += chunk.rows
            for knob, count in chunk.dirty.items():
                dirty_counts[knob] += count
            if progress:
                progress(table.name, loaded, table.rows)
    return TableLoad(table.name, loaded, time.perf_counter() - started)


def _write_ledger(
    conn: psycopg.Connection[Any],
    profile: Profile,
    seed: int,
    dirty: DirtyRates,
    dirty_counts: dict[str, int],
    loads: list[TableLoad],
) -> None:
    conn.execute(
        "INSERT INTO vpbench.seed_info "
        "(profile, seed, dirty_rates, dirty_counts, row_counts, vpbench_version) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        [
            profile.name,
            seed,
            json.dumps(dirty.as_dict()),
            json.dumps(dirty_counts),
            json.dumps({load.table: load.rows for load in loads}),
            __version__,
        ],
    )
