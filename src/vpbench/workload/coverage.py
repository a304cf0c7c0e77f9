"""``vpbench coverage``: which of the server's top statements the workload files measure.

A workload statement (any variant) covers a server statement when PostgreSQL's parser
gives both the same fingerprint, which ignores constants and parameter numbering.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpbench.workload.spec import Workload
from vpbench.workload.statements import ServerStatement, ServerStatements, fingerprint


@dataclass(frozen=True)
class CoveredStatement:
    statement: ServerStatement
    share: float
    covered_by: tuple[str, ...]
    """the workload queries that measure it (``workload.query``); empty if none"""


@dataclass(frozen=True)
class Coverage:
    statements: ServerStatements
    top: tuple[CoveredStatement, ...]
    covered_share: float
    """of the execution time of every application statement, not only the top"""

    @property
    def uncovered_share(self) -> float:
        return 1.0 - self.covered_share if self.statements.statements else 0.0


def workload_fingerprints(workloads: tuple[Workload, ...]) -> dict[str, list[str]]:
    """Fingerprint → the queries (``workload.query``) whose base SQL or a variant has it."""
    found: dict[str, list[str]] = {}
    for workload in workloads:
        for query in workload.queries.values():
            for sql in (query.sql, *(v.sql for v in query.variants)):
                names = found.setdefault(fingerprint(sql.positional), [])
                label = f"{workload.name}.{query.name}"
                if label not in names:
                    names.append(label)
    return found


def coverage(
    statements: ServerStatements, workloads: tuple[Workload, ...], *, top: int = 20
) -> Coverage:
    known = workload_fingerprints(workloads)
    covered = [s for s in statements.statements if s.fingerprint in known]
    rows = tuple(
        CoveredStatement(s, statements.share([s]), tuple(known.get(s.fingerprint, ())))
        for s in statements.statements[:top]
    )
    return Coverage(statements, rows, statements.share(covered))
