"""Every statement in force prepared on the target before any timing, so a typo or a
missing column costs seconds, not a run.

Loading a workload already ran PostgreSQL's own parser (pglast) on every statement and
variant; preparing (never running) each statement in force on the server finds what only
the schema can tell, such as a missing column or table, with the server's message and
SQLSTATE, as ``file:line: message`` for every failing statement at once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg.pq import DiagnosticField, ExecStatus

from vpbench.errors import WorkloadError
from vpbench.workload.spec import Issue, Query, SqlText, Workload, statement_label


def check_prepared(
    conn: psycopg.Connection[Any], workloads: Sequence[Workload], applied: Collection[str]
) -> None:
    """Prepare (never run) the statement in force of every query on ``conn``; raise one
    WorkloadError listing every statement the server refuses."""
    issues: list[Issue] = []
    for workload in workloads:
        for query in workload.queries.values():
            variant, sql = query.sql_for(applied)
            failure = prepare_failure(conn, sql.positional)
            if failure is not None:
                issues.append(_issue(query, variant, sql, failure[1], failure[0]))
    if issues:
        raise WorkloadError(issues)


def prepare_failure(conn: psycopg.Connection[Any], statement: str) -> tuple[str, int] | None:
    """Prepare (never run) ``statement`` as the unnamed statement of ``conn``: the server's
    message with its SQLSTATE and the 0-based offset it points at, or None when it
    prepares (and can then be described)."""
    result = conn.pgconn.prepare(b"", statement.encode())
    if result.status == ExecStatus.COMMAND_OK:
        return None
    primary = _field(result, DiagnosticField.MESSAGE_PRIMARY) or "prepare failed"
    state = _field(result, DiagnosticField.SQLSTATE)
    position = _field(result, DiagnosticField.STATEMENT_POSITION)
    text = f"{primary} [SQLSTATE {state}]" if state else primary
    return text, int(position) - 1 if position else 0


def _issue(query: Query, variant: str | None, sql: SqlText, offset: int, message: str) -> Issue:
    return Issue(
        query.path, sql.line_at(offset), f"{statement_label(query.name, variant)}: {message}"
    )


def _field(result: Any, field: DiagnosticField) -> str | None:
    value = result.error_field(field)
    return value.decode(errors="replace") if value else None
