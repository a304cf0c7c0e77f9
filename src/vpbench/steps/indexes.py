"""Which index gave the gain: for every index a step adds, the workload queries whose plans
after the step use it, each one's paired verdict, the index's bytes and the measured cost
of an insert into its table. An index no workload query uses is pure cost, unless it
serves a foreign key (a delete in the parent finds the referencing rows by it).

The insert cost is measured per table, not per index: where a step adds several indexes to
one table, they share that cost, and the report says how many share it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from vpbench.analysis.verdicts import Judgement
from vpbench.measure.writecost import WriteCost
from vpbench.steps.model import StepReport


@dataclass(frozen=True)
class QueryGain:
    query: str
    judgement: Judgement
    """the query's paired verdict, after against before"""


@dataclass(frozen=True)
class IndexGain:
    index: str
    """schema-qualified"""
    table: str
    bytes: int
    used_by: tuple[QueryGain, ...]
    """the queries whose EXPLAIN after the step uses this index"""
    write: WriteCost | None
    """inserts into its table, before against after"""
    sharing_write_cost: int
    """how many indexes this step added to the same table (they share ``write``)"""
    foreign_keys: tuple[str, ...] = ()
    """the foreign keys whose columns lead it"""

    @property
    def pure_cost(self) -> bool:
        return not self.used_by and not self.foreign_keys

    def to_dict(self) -> dict[str, Any]:
        wal = self.write.wal_change if self.write else None
        return {
            "index": self.index,
            "table": self.table,
            "bytes": self.bytes,
            "pure_cost": self.pure_cost,
            "used_by": [
                {"query": g.query, "judgement": g.judgement.to_dict()} for g in self.used_by
            ],
            "insert_wal_change": wal,
            "insert_wal_bytes": (
                [self.write.before.wal_bytes, self.write.after.wal_bytes]
                if self.write and self.write.before and self.write.after
                else None
            ),
            "sharing_write_cost": self.sharing_write_cost,
            "foreign_keys": list(self.foreign_keys),
        }


def index_gains(step: StepReport) -> tuple[IndexGain, ...]:
    """Every index the step added to a table that was there before, with what uses it (a
    new table's own keys, e.g. of a quarantine table, come with the table)."""
    new_tables = {c.name for c in step.costs if c.kind == "table" and c.bytes_before == 0}
    added = [
        c
        for c in step.costs
        if c.kind == "index" and c.bytes_before == 0 and c.bytes_after and c.table not in new_tables
    ]
    before = {e.name: e for e in step.before if e.kind == "query"}
    sharing = Counter(c.table for c in added)
    writes = {w.table: w for w in step.writes}
    gains = []
    for cost in added:
        name = cost.name.split(".", 1)[-1]
        used_by = tuple(
            QueryGain(entry.name, step.verdicts.entries[entry.name])
            for entry in step.after
            if entry.kind == "query"
            and entry.name in before
            and any(name in s.indexes_used for s in entry.plan_summaries.values())
        )
        write = writes.get(cost.table.split(".", 1)[-1])
        gains.append(IndexGain(cost.name, cost.table, cost.bytes_after, used_by, write,
                               sharing[cost.table], cost.foreign_keys))  # fmt: skip
    return tuple(gains)
