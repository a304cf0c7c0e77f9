"""Table maintenance: settle a database so autovacuum has nothing left to do, and read the
counters that say whether VACUUM or ANALYZE ran between two measurements.

A freshly written table (seeded, migrated) is not in a steady state: autovacuum will soon
set its visibility map, prune dead rows and draw new statistics, and each of those changes
buffers, plans and timings. Measuring before and after that happens compares two different
databases. ``settle`` does the work up front, and only where it is needed, so that a table
nobody touched keeps its statistics (a fresh ANALYZE samples rows at random and may change
plans by itself).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

OWN_SCHEMA = "vpbench"

_TABLES = """
SELECT n.nspname, c.relname, c.relpages, c.relallvisible, c.reltuples,
       coalesce(s.n_dead_tup, 0), coalesce(s.n_mod_since_analyze, 0),
       coalesce(s.n_ins_since_vacuum, 0),
       coalesce(s.vacuum_count + s.autovacuum_count, 0),
       coalesce(s.analyze_count + s.autoanalyze_count, 0),
       s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_toast'
ORDER BY 1, 2
"""
# Columns of non-empty tables that have no statistics: ALTER COLUMN ... TYPE drops them, and
# a column added since the last ANALYZE has none. Index expressions are listed the same way.
_WITHOUT_STATISTICS = """
SELECT n.nspname, c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND c.reltuples > 0
  AND NOT EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = n.nspname
                  AND p.tablename = c.relname AND p.attname = a.attname)
UNION
SELECT n.nspname, t.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE i.indexprs IS NOT NULL AND t.reltuples > 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = n.nspname
                  AND p.tablename = c.relname)
"""


@dataclass(frozen=True)
class TableMaintenance:
    """One table's maintenance counters (from ``pg_stat_user_tables`` and ``pg_class``)."""

    table: str
    """schema-qualified name"""
    vacuums: int
    """VACUUMs run so far, by hand or by autovacuum"""
    analyzes: int
    dead_rows: int
    modified_since_analyze: int
    inserted_since_vacuum: int
    pages: int
    all_visible_pages: int
    analyzed: bool

    @property
    def needs_vacuum(self) -> bool:
        """Dead rows to prune, or pages whose visibility map bit is not set yet."""
        return (
            self.dead_rows > 0
            or self.inserted_since_vacuum > 0
            or self.all_visible_pages < self.pages
        )

    @property
    def needs_analyze(self) -> bool:
        return self.modified_since_analyze > 0 or not self.analyzed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Settled:
    """What ``settle`` did: the tables it vacuumed and analysed, and whether it checkpointed."""

    vacuumed: tuple[str, ...]
    analyzed: tuple[str, ...]
    checkpoint: bool
    """False when a checkpoint was not asked for or not permitted"""

    @property
    def changed(self) -> bool:
        return bool(self.vacuumed or self.analyzed)


def maintenance_state(conn: psycopg.Connection[Any]) -> dict[str, TableMaintenance]:
    """Every table's maintenance counters, by qualified name."""
    without_statistics = {f"{r[0]}.{r[1]}" for r in conn.execute(_WITHOUT_STATISTICS)}
    state = {}
    for row in conn.execute(_TABLES).fetchall():
        name = f"{row[0]}.{row[1]}"
        state[name] = TableMaintenance(
            table=name,
            vacuums=int(row[8]),
            analyzes=int(row[9]),
            dead_rows=int(row[5]),
            modified_since_analyze=int(row[6]),
            inserted_since_vacuum=int(row[7]),
            pages=int(row[2]),
            all_visible_pages=int(row[3]),
            analyzed=bool(row[10]) and name not in without_statistics,
        )
    return state


def flush_statistics(conn: psycopg.Connection[Any]) -> None:
    """Make this session's pending table statistics visible to other sessions now (they
    are otherwise flushed up to a few seconds later), so ``settle`` sees what it did."""
    if conn.info.server_version >= 150000:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")  # the flush happens when this session next goes idle


def settle(conn: psycopg.Connection[Any], *, checkpoint: bool = False) -> Settled:
    """VACUUM the tables that need it and ANALYZE those whose rows changed or that lack
    statistics; then CHECKPOINT if asked (and permitted), so that no dirty page from the
    work is written while something is being timed. ``conn`` must be in autocommit mode.

    Before PostgreSQL 15 the counters may lag behind the last writes, so every table is
    vacuumed and analysed."""
    exact = conn.info.server_version >= 150000
    vacuumed, analyzed = [], []
    for table in maintenance_state(conn).values():
        if table.table.startswith(f"{OWN_SCHEMA}."):
            continue  # vpbench's ledgers: never measured, and changed by every migration
        vacuum = table.needs_vacuum or not exact
        analyze = table.needs_analyze or not exact
        if not (vacuum or analyze):
            continue
        schema, name = table.table.split(".", 1)
        command = {(True, True): "VACUUM (ANALYZE) {}", (True, False): "VACUUM {}",
                   (False, True): "ANALYZE {}"}[vacuum, analyze]  # fmt: skip
        conn.execute(sql.SQL(command).format(sql.Identifier(schema, name)))
        if vacuum:
            vacuumed.append(table.table)
        if analyze:
            analyzed.append(table.table)
    if vacuumed or analyzed:
        log.info("settled: vacuumed %s; analysed %s", vacuumed or "none", analyzed or "none")
    return Settled(tuple(vacuumed), tuple(analyzed), checkpoint and run_checkpoint(conn))


def run_checkpoint(conn: psycopg.Connection[Any]) -> bool:
    """CHECKPOINT; False when the role may not (it needs superuser or pg_checkpoint)."""
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        log.info("CHECKPOINT not permitted for this role; dirty pages stay in memory")
        return False
    return True


def maintenance_changes(
    before: dict[str, TableMaintenance], after: dict[str, TableMaintenance]
) -> list[str]:
    """Tables VACUUMed or ANALYZEd between two readings, e.g. ``reflections (autovacuum)``."""
    changes = []
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            continue
        work = [w for w, n, o in (("vacuum", new.vacuums, old.vacuums),
                                  ("analyze", new.analyzes, old.analyzes)) if n != o]  # fmt: skip
        if work:
            changes.append(f"{name} ({', '.join(work)})")
    return changes
