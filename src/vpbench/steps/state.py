"""A settled state of the working database and what ``steps`` reads of it, once.

The state a step leaves is the state the next step starts from, and nothing writes the
working database between the two: so each state is settled (VACUUM, ANALYZE), audited,
sized and snapshotted once, by the step that reaches it, and the next step starts from
those figures instead of making the same passes over the same data again.

A table's snapshot (a checksum over every row) is the costliest of these passes: on
``large`` one pass over the quiz attempts takes about a minute. A table whose key
(``vpbench.dataset.snapshot.table_keys``: its file, its columns, the rows written to it)
did not change keeps its snapshot: a step that only adds indexes reads no row, and the
reversibility check reads only the tables ``down`` wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from vpbench.dataset.audit import run_audit
from vpbench.dataset.audit_result import AuditReport
from vpbench.dataset.checks_file import UserCheck
from vpbench.dataset.snapshot import (
    SchemaShape,
    TableSnapshot,
    schema_shape,
    snapshot_tables,
    table_keys,
    user_tables,
)
from vpbench.migrations.ledger import applied_migrations
from vpbench.server.maintenance import Settled, settle
from vpbench.steps.checks import RelationSize, quarantined_rows, relation_sizes
from vpbench.steps.phases import PhaseClock


@dataclass(frozen=True)
class StateFacts:
    """How a state was settled, and its ledger, audit, sizes, rows, contents and schema."""

    settled: Settled
    applied: tuple[str, ...]
    audit: AuditReport
    sizes: dict[str, RelationSize]
    snapshot: dict[str, TableSnapshot]
    """rows and a content checksum per table of the database's own schemas"""
    keys: dict[str, str | None]
    """per table, what changes when its contents can (``table_keys``)"""
    shape: SchemaShape
    quarantined: dict[str, int]
    reread: tuple[str, ...] = ()
    """the tables whose rows were read for the snapshot (the others kept their key)"""

    @property
    def rows(self) -> dict[str, int]:
        return {table: snap.rows for table, snap in self.snapshot.items()}

    def differences(
        self, conn: psycopg.Connection[Any], copy_of: StateFacts, keys: dict[str, str | None]
    ) -> list[str]:
        """How the database on ``conn`` differs from this state: its schema (the first ten
        differences) and each application table's rows and contents. The database is a
        copy of ``copy_of`` whose tables had ``keys`` before it was last written: a table
        whose key is the same now holds what ``copy_of`` held, and is not read again."""
        problems = self.shape.differences(schema_shape(conn))[:10]
        now = snapshot_tables_again(conn, copy_of.snapshot, keys)[0]
        for table, then in self.snapshot.items():
            found = now.get(table)
            if found is None:
                problems.append(f"{table}: missing after down")
            elif found.rows != then.rows:
                problems.append(f"{table}: {then.rows} rows before, {found.rows} after down")
            elif found != then:
                problems.append(f"{table}: contents differ after down")
        return problems


def settle_and_read(
    conn: psycopg.Connection[Any],
    clock: PhaseClock,
    previous: StateFacts | None = None,
    checks: Sequence[UserCheck] = (),
) -> StateFacts:
    """Settle the database on ``conn`` and read its figures (the audit with ``checks``
    among them), lapping ``clock`` for each; tables whose key is still that of the
    ``previous`` state keep their snapshot."""
    settled = settle(conn)
    clock.lap("settle")
    snapshot, keys, reread = snapshot_tables_again(
        conn, previous.snapshot if previous else {}, previous.keys if previous else {}
    )
    facts = StateFacts(
        settled=settled,
        applied=tuple(applied_migrations(conn)),
        audit=run_audit(conn, checks=checks),
        sizes=relation_sizes(conn),
        snapshot=snapshot,
        keys=keys,
        shape=schema_shape(conn),
        quarantined=quarantined_rows(conn),
        reread=reread,
    )
    clock.lap("audit")
    return facts


def snapshot_tables_again(
    conn: psycopg.Connection[Any],
    known: dict[str, TableSnapshot],
    keys: dict[str, str | None],
) -> tuple[dict[str, TableSnapshot], dict[str, str | None], tuple[str, ...]]:
    """The application tables' snapshots on ``conn``: ``known`` for the tables whose key
    is still in ``keys``, read again for the others. Returns the snapshots, the keys now
    and the tables read."""
    tables = user_tables(conn)
    now = table_keys(conn, tables)
    kept = {t for t in tables if now[t] is not None and keys.get(t) == now[t]}
    reread = tuple(t for t in tables if t not in kept or t not in known)
    fresh = snapshot_tables(conn, reread)
    return {t: fresh[t] if t in fresh else known[t] for t in tables}, now, reread
