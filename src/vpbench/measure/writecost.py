"""What one write costs, the way the app writes: a prepared single-row INSERT of one quiz
attempt or one reflection.

Two kinds of figure, on both states of a step:

- deterministic, per inserted row (median over probe rows): WAL bytes (the advance of the
  WAL insert position for an insert whose pages were touched just before, so without
  full-page images: heap tuple, index entries, foreign-key row locks and whatever triggers
  write), WAL records and shared buffers of the INSERT itself (``EXPLAIN (ANALYZE, BUFFERS,
  WAL)``), buffers first dirtied (on the first insert after a checkpoint), trigger calls;
  and the table's indexes, foreign keys and triggers;
- timed: the client time of the INSERT, paired execution by execution across the two
  states like the reads (``vpbench.measure.interleave``), judged with the same statistics.

Every probe runs inside a transaction that is rolled back: no row is added to either
database. The probe rows are copies of existing rows (so every constraint holds) with new,
seeded ids, the same on both sides.

The app's INSERT names every column it can write, but for those an expand step *retired*:
a column whose comment starts with ``retired:`` is one the app deployed after that step no
longer writes (a trigger keeps it filled for the app deployed before, until a later step
drops it), as Rails' ``ignored_columns`` would have it.
"""

from __future__ import annotations

import itertools
import logging
import random
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from vpbench.measure.interleave import balanced_orders, open_pair, separate_cores
from vpbench.measure.runner import PreparedStatements, open_session
from vpbench.server.target import error_message
from vpbench.server.wal import wal_insert_position
from vpbench.workload.spec import SqlText

log = logging.getLogger(__name__)

WRITE_TABLES = ("quiz_attempts", "reflections")
PROBE_ROWS = 15
"""rows whose insert is EXPLAINed on each side for the deterministic figures"""
WAL_READINGS = 20
"""re-inserts per probe row at most: a re-insert can land on a page not written since the
last checkpoint (each rolled-back tuple takes room, so the free space map sends the next one
elsewhere) and pay a full-page image; readings go on until CLEAN_READINGS of them wrote none"""
CLEAN_READINGS = 3
"""readings without a full-page image per probe row; the least WAL among them is kept
(another session's WAL or a trigger's full-page image only adds)"""

RETIRED = "retired:"
"""how the comment of a column the app no longer writes starts"""
_COLUMNS = f"""
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = '' AND a.attidentity <> 'a'
  AND NOT starts_with(coalesce(col_description(a.attrelid, a.attnum), ''), '{RETIRED}')
ORDER BY a.attnum
"""
_STRUCTURE = """
SELECT (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid AND i.indisvalid),
       (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f'),
       (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
FROM pg_class c WHERE c.oid = to_regclass(%s)
"""


@dataclass(frozen=True)
class WriteProfile:
    """What inserting one row costs on one database (medians over the probe rows)."""

    wal_bytes: float
    """WAL written per row, full-page images excluded, triggers and FK locks included"""
    wal_records: float
    """WAL records of the INSERT itself: the heap tuple and each index entry"""
    buffers: float
    """shared buffers the INSERT itself hit or read"""
    dirtied: float
    """buffers the INSERT dirtied on pages that were clean (after a checkpoint)"""
    trigger_calls: float
    """trigger calls per row, foreign-key checks included"""
    indexes: int
    foreign_keys: int
    triggers: int
    """user triggers on the table"""
    rows: int
    """probe rows the medians are over"""
    clean_rows: int
    """probe rows with a re-insert that wrote no full-page image; ``wal_bytes`` is their
    median (of all rows when none had one)"""


@dataclass(frozen=True)
class WriteCost:
    """One table's write cost before and after a step."""

    table: str
    before: WriteProfile | None
    after: WriteProfile | None
    before_ns: tuple[int, ...] = ()
    after_ns: tuple[int, ...] = ()
    rounds: tuple[int, ...] = ()
    """the round of each timed pair"""
    error: str | None = None

    @property
    def wal_change(self) -> float | None:
        """Relative change of WAL bytes per row (0.25 = a quarter more)."""
        if self.before and self.after and self.before.wal_bytes:
            return self.after.wal_bytes / self.before.wal_bytes - 1
        return None

    @property
    def changed(self) -> bool:
        """Whether any deterministic figure differs between the two states."""
        return self.before != self.after and None not in (self.before, self.after)


@dataclass(frozen=True)
class _Insert:
    """One side's prepared INSERT, the same under EXPLAIN, and the probe rows' values."""

    statement: SqlText
    explain: str
    """``EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) INSERT ...`` with psycopg placeholders"""
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class WriteOptions:
    rounds: int = 30
    """rounds of fresh sessions for the timed inserts: a backend's core sets a round's
    speed (see ``vpbench.measure.interleave.open_pair``), so many short rounds beat a few
    long ones"""
    repeat: int = 2
    """timed pairs per round"""
    seed: int = 1
    timeout_ms: int = 30_000


def measure_write_costs(
    before: str,
    after: str,
    options: WriteOptions = WriteOptions(),
    *,
    tables: Sequence[str] = WRITE_TABLES,
) -> tuple[WriteCost, ...]:
    """Probe each table on both databases: deterministic figures, then paired timings."""
    costs = []
    for table in tables:
        try:
            costs.append(_table_cost(before, after, table, options))
        except psycopg.Error as exc:
            log.info("write probe of %s failed: %s", table, exc)
            costs.append(WriteCost(table, None, None, error=error_message(exc)))
    return tuple(costs)


def _table_cost(before: str, after: str, table: str, options: WriteOptions) -> WriteCost:
    with (
        open_session(before, options.timeout_ms) as old,
        open_session(after, options.timeout_ms) as new,
    ):
        if not all(_exists(c, table) for c in (old, new)):
            return WriteCost(table, None, None, error="table missing on one side")
        count = PROBE_ROWS + options.rounds * options.repeat
        ids = _probe_ids(old, new, table, count, options.seed)
        if not ids:
            return WriteCost(table, None, None, error="no row to copy in both states")
        fresh = _first_ids(len(ids), options.seed)
        sides = {"before": old, "after": new}
        inserts = {side: _insert(conn, table, ids, fresh) for side, conn in sides.items()}
        profiles = {side: _profile(conn, table, inserts[side]) for side, conn in sides.items()}
    timed = _timed({"before": before, "after": after}, inserts, options)
    return WriteCost(table, profiles["before"], profiles["after"], *timed)


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    return bool(row and row[0])


def _probe_ids(
    old: psycopg.Connection[Any], new: psycopg.Connection[Any], table: str, count: int, seed: int
) -> list[str]:
    """Ids of rows present in both states, picked by a seeded page sample of the new one
    (widened until it holds enough rows: a small table has few pages to pick from)."""
    row = new.execute(
        "SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = to_regclass(%s)", [table]
    ).fetchone()
    percent = min(100.0, max(0.01, 100.0 * 4 * count / float(row[0] if row else 1)))
    present = _by_id(old, table, sql.SQL("id::text"))
    while True:
        query = sql.SQL(
            "SELECT id::text FROM {} TABLESAMPLE SYSTEM ({}) REPEATABLE ({}) ORDER BY id LIMIT {}"
        ).format(sql.Identifier(table), sql.Literal(percent), sql.Literal(seed),
                 sql.Literal(4 * count))  # fmt: skip
        candidates = [r[0] for r in new.execute(query).fetchall()]
        both = {r[0] for r in old.execute(present, [candidates]).fetchall()}
        found = [i for i in candidates if i in both][:count]
        if len(found) == count or percent >= 100:
            return found
        percent = min(100.0, percent * 4)


def _by_id(conn: psycopg.Connection[Any], table: str, columns: sql.Composable) -> sql.Composed:
    """``SELECT columns FROM table WHERE id = ANY(%s)``, the text ids cast to the id's own
    type so that the primary key serves the lookup."""
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attname = 'id'",
        [table],
    ).fetchone()
    assert row is not None
    return sql.SQL("SELECT {} FROM {} WHERE id = ANY(CAST(%s AS {}[]))").format(
        columns, sql.Identifier(table), sql.SQL(row[0])
    )


def app_inserts(
    conn: psycopg.Connection[Any],
    table: str,
    count: int,
    seed: int,
    *,
    also_in: psycopg.Connection[Any] | None = None,
) -> tuple[SqlText, list[dict[str, Any]]] | None:
    """The app's prepared single-row INSERT into ``table`` on this schema, and ``count``
    rows for it (copies of existing rows with new ids, so every constraint holds; rows
    present in ``also_in`` too, when given); None when the table is missing or empty."""
    if not _exists(conn, table):
        return None
    ids = _probe_ids(also_in or conn, conn, table, count, seed)
    if not ids:
        return None
    insert = _insert(conn, table, ids, _first_ids(len(ids), seed))
    return insert.statement, insert.rows


def app_updates(
    conn: psycopg.Connection[Any], table: str, count: int, seed: int
) -> tuple[SqlText, list[dict[str, Any]]] | None:
    """The app's prepared single-row UPDATE of ``table`` on this schema, as an ORM saves a
    row it has read (every column it knows set to the values read, found by id), and
    ``count`` stored rows for it; None when the table is missing or empty."""
    if not _exists(conn, table):
        return None
    ids = _probe_ids(conn, conn, table, count, seed)
    if not ids:
        return None
    written, rows = _stored_rows(conn, table, ids)
    columns = [c for c in written if c != "id"]
    assigned = ", ".join(f"{_quoted(c)} = ${n}" for n, c in enumerate(columns, start=1))
    prepared = f"UPDATE {_quoted(table)} SET {assigned} WHERE id = ${len(columns) + 1}"
    return SqlText(prepared, prepared, (*columns, "id"), prepared), rows


def _first_ids(count: int, seed: int) -> list[str]:
    return list(itertools.islice(fresh_ids(seed), count))


def fresh_ids(seed: int) -> Iterator[str]:
    """New version-4 uuids for inserted rows, the same sequence for the same seed."""
    rng = random.Random(seed)
    while True:
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _insert(conn: psycopg.Connection[Any], table: str, ids: list[str], fresh: list[str]) -> _Insert:
    """The app's INSERT on this side's columns, and the probe rows' values as text (the
    server casts them to each column's type, as it does for the app's parameters)."""
    columns, stored = _stored_rows(conn, table, ids)
    head = f"INSERT INTO {_quoted(table)} ({', '.join(map(_quoted, columns))}) VALUES"
    numbered = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    prepared = f"{head} ({numbered})"
    statement = SqlText(prepared, prepared, tuple(columns), prepared)
    explain = (
        f"EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) {head} ({', '.join(['%s'] * len(columns))})"
    )
    rows = [values | {"id": new_id} for values, new_id in zip(stored, fresh, strict=True)]
    return _Insert(statement, explain, rows)


def _stored_rows(
    conn: psycopg.Connection[Any], table: str, ids: list[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns the app writes on this side, and the rows ``ids`` with their values as
    text, in the order of ``ids``."""
    columns = [r[0] for r in conn.execute(_COLUMNS, [table]).fetchall()]
    texts = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c)) for c in ["id", *columns]
    )
    found = {r[0]: r[1:] for r in conn.execute(_by_id(conn, table, texts), [ids]).fetchall()}
    return columns, [dict(zip(columns, found[i], strict=True)) for i in ids]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _profile(conn: psycopg.Connection[Any], table: str, insert: _Insert) -> WriteProfile:
    # Per probe row, the least WAL of its re-inserts without a full-page image (clean_wal),
    # or of all of them when every one wrote an image (image_wal).
    clean_wal: list[int] = []
    image_wal: list[int] = []
    records, buffers, dirtied, calls = [], [], [], []
    rows = insert.rows[:PROBE_ROWS]
    for values in rows:
        params = [values[c] for c in insert.statement.params]
        with conn.transaction(force_rollback=True):
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            conn.execute("SAVEPOINT probe")
            first = _plan(conn, insert.explain, params)
            readings, clean_readings = [], []
            for _ in range(WAL_READINGS):
                conn.execute("ROLLBACK TO SAVEPOINT probe")
                start = wal_insert_position(conn)
                plan = _plan(conn, insert.explain, params)
                reading = (wal_insert_position(conn) - start, plan)
                readings.append(reading)
                if int(plan["Plan"].get("WAL FPI", 0)) == 0:
                    clean_readings.append(reading)
                    if len(clean_readings) == CLEAN_READINGS:
                        break
        least, kept = min(clean_readings or readings, key=lambda reading: reading[0])
        node = kept["Plan"]
        (clean_wal if clean_readings else image_wal).append(least)
        records.append(int(node.get("WAL Records", 0)))
        buffers.append(int(node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)))
        dirtied.append(int(first["Plan"].get("Shared Dirtied Blocks", 0)))
        calls.append(sum(int(t.get("Calls", 0)) for t in kept.get("Triggers", ())))
    structure = conn.execute(_STRUCTURE, [table]).fetchone()
    assert structure is not None
    return WriteProfile(
        # Rows whose every re-insert paid a full-page image (some land on a fresh page each
        # time) say more about the last checkpoint than about the write: left out when
        # others did not.
        wal_bytes=statistics.median(clean_wal or image_wal),
        wal_records=statistics.median(records),
        buffers=statistics.median(buffers),
        dirtied=statistics.median(dirtied),
        trigger_calls=statistics.median(calls),
        indexes=int(structure[0]),
        foreign_keys=int(structure[1]),
        triggers=int(structure[2]),
        rows=len(rows),
        clean_rows=len(clean_wal),
    )


def _plan(conn: psycopg.Connection[Any], query: str, params: list[Any]) -> dict[str, Any]:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    document: dict[str, Any] = row[0][0]
    return document


def _timed(
    conninfo: dict[str, str], inserts: dict[str, _Insert], options: WriteOptions
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Paired client times of the prepared INSERT, each in a rolled-back transaction, with
    fresh sessions every round (``vpbench.measure.interleave.open_pair``)."""
    samples: dict[str, list[int]] = {"before": [], "after": []}
    rounds: list[int] = []
    timed_rows = range(PROBE_ROWS, len(inserts["before"].rows))
    # Each timed row is inserted once untimed first (and rolled back), so that the timing
    # is of an insert whose index pages are in shared buffers and already written since the
    # last checkpoint: the first touch of a page pays a read and a full-page image, which
    # depend on what ran before, not on the schema.
    for side, conn in conninfo.items():
        with open_session(conn, options.timeout_ms) as session:
            statements = PreparedStatements()
            for row in timed_rows:
                _insert_once(session, statements, inserts[side], row)
    rows = iter(timed_rows)
    with separate_cores() as core:
        for number, order in enumerate(balanced_orders(options.rounds, options.seed)):
            with open_pair(conninfo, order, options.timeout_ms, core) as connections:
                statements = PreparedStatements()
                for side in order:  # untimed: PREPARE, the new backend's first catalog reads
                    _insert_once(connections[side], statements, inserts[side], PROBE_ROWS - 1)
                for pair in range(options.repeat):
                    index = next(rows, None)
                    if index is None:
                        break
                    for side in order if pair % 2 == 0 else order[::-1]:
                        samples[side].append(
                            _insert_once(connections[side], statements, inserts[side], index)
                        )
                    rounds.append(number)
    return tuple(samples["before"]), tuple(samples["after"]), tuple(rounds)


def _insert_once(
    conn: psycopg.Connection[Any], statements: PreparedStatements, insert: _Insert, index: int
) -> int:
    """Nanoseconds of one prepared INSERT of probe row ``index``, rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        began = time.perf_counter_ns()
        statements.execute(conn, insert.statement, insert.rows[index])
        return time.perf_counter_ns() - began
