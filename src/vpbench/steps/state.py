"""A settled state of the working database and what ``steps`` reads of it, once.

The state a step leaves is the state the next step starts from, and nothing writes the
working database between the two: so each state is settled (VACUUM, ANALYZE), audited,
sized and snapshotted once, by the step that reaches it, and the next step starts from
those figures instead of making the same passes over the same data again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from vpbench.dataset.audit import AuditReport, run_audit
from vpbench.dataset.snapshot import SchemaShape, TableSnapshot, schema_shape, snapshot_tables
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
    """rows and a content checksum per application table"""
    shape: SchemaShape
    quarantined: dict[str, int]

    @property
    def rows(self) -> dict[str, int]:
        return {table: snap.rows for table, snap in self.snapshot.items()}

    def differences(self, conn: psycopg.Connection[Any]) -> list[str]:
        """How the database on ``conn`` differs from this state: its schema (the first ten
        differences) and each application table's rows and contents."""
        problems = self.shape.differences(schema_shape(conn))[:10]
        now = snapshot_tables(conn)
        return problems + [
            f"{table}: {self.snapshot[table].rows} rows before, {now[table].rows} after down"
            if self.snapshot[table].rows != now[table].rows
            else f"{table}: contents differ after down"
            for table in self.snapshot
            if now[table] != self.snapshot[table]
        ]


def settle_and_read(conn: psycopg.Connection[Any], clock: PhaseClock) -> StateFacts:
    """Settle the database on ``conn`` and read its figures, lapping ``clock`` for each."""
    settled = settle(conn)
    clock.lap("settle")
    facts = StateFacts(
        settled=settled,
        applied=tuple(applied_migrations(conn)),
        audit=run_audit(conn),
        sizes=relation_sizes(conn),
        snapshot=snapshot_tables(conn),
        shape=schema_shape(conn),
        quarantined=quarantined_rows(conn),
    )
    clock.lap("audit")
    return facts
