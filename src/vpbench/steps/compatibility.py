"""The old app on the new schema: does the app deployed *before* a step keep working once
the step is applied, and does the new app's SQL already work before it?

For every workload query, the SQL in force before the step (the old app's) runs against
the state after it and is compared with the SQL in force after it (the new app's) there;
the new SQL also runs against the state before. The old app's single-row INSERTs run
against the state after, rolled back. From that, one deploy order per step:

- ``safe to deploy in any order``: the old SQL works on the new schema, the new on the old;
- ``migrate first, then deploy the new queries``: the new SQL needs the new schema;
- ``deploy the new queries first``: the new SQL works on the old schema, the old on the
  new does not;
- ``breaks the old app``: neither works on the other's schema (a coordinated deploy);
- ``reconnect the app after it``: the old SQL works on the new schema when prepared afresh,
  but the deployed app's requests failed under live traffic (statements it prepared before
  a column changed type fail until its connections prepare them again).

Requests a new constraint refused under traffic (SQLSTATE class 23: the app wrote data the
step now forbids) are listed, not counted as breaking the app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from vpbench.measure.availability import refused_by_constraint
from vpbench.measure.runner import PreparedStatements
from vpbench.measure.writecost import WRITE_TABLES, app_inserts
from vpbench.steps.checks import compare_results
from vpbench.workload.sampling import ParameterPool, ParameterStream
from vpbench.workload.spec import Query, SqlText, Workload

ANY_ORDER = "safe to deploy in any order"
MIGRATE_FIRST = "migrate first, then deploy the new queries"
NEW_QUERIES_FIRST = "deploy the new queries first"
BREAKS = "breaks the old app"
RECONNECT = "reconnect the app after it"


@dataclass(frozen=True)
class QueryCompatibility:
    query: str
    old_variant: str | None
    new_variant: str | None
    old_on_new: str
    """"same" (as the new SQL there), "differs: ..." or "fails: ..." """
    new_on_old: str
    """"works", "fails: ..." or "unchanged" (the step brings no new SQL for it)"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InsertCompatibility:
    table: str
    result: str
    """"works", "works; refused ..." (a probe row holds data a new constraint now forbids,
    as under traffic: not a break of the app) or "fails: ..." """

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OldAppCheck:
    queries: tuple[QueryCompatibility, ...]
    inserts: tuple[InsertCompatibility, ...]
    declared: str = ""
    """the migration's ``breaks_old_app`` reason, if it declares one"""
    failed_under_load: tuple[str, ...] = ()
    """the deployed app's requests that failed while the step ran under traffic
    ("2642 write error 42804"), other than those a new constraint refused"""
    refused_under_load: tuple[str, ...] = ()
    """its writes a new constraint refused (SQLSTATE class 23)"""
    deploy_before: str = ""
    """the later step the app with this step's queries must be deployed before (the
    migration's ``deploy_before``)"""

    @property
    def sql_breaks(self) -> tuple[str, ...]:
        """What of the old app's SQL fails or answers differently on the new schema."""
        return tuple(
            f"{q.query}: {q.old_on_new}" for q in self.queries if q.old_on_new != "same"
        ) + tuple(
            f"INSERT INTO {i.table}: {i.result}"
            for i in self.inserts
            if i.result.startswith("fails")
        )

    @property
    def old_app_breaks(self) -> tuple[str, ...]:
        """What of the old app fails or answers differently on the new schema, or failed
        while the step ran under its traffic."""
        return self.sql_breaks + tuple(f"under load: {f}" for f in self.failed_under_load)

    @property
    def new_needs_new_schema(self) -> tuple[str, ...]:
        return tuple(
            f"{q.query}: {q.new_on_old}" for q in self.queries if q.new_on_old.startswith("fails")
        )

    @property
    def deploy_order(self) -> str:
        old_breaks, new_needs = bool(self.sql_breaks), bool(self.new_needs_new_schema)
        if old_breaks:
            return BREAKS if new_needs else NEW_QUERIES_FIRST
        if self.failed_under_load:
            return RECONNECT
        return MIGRATE_FIRST if new_needs else ANY_ORDER

    @property
    def deploy_advice(self) -> str:
        """The deploy order, with the step the new queries must be deployed before."""
        later = f", before {self.deploy_before}" if self.deploy_before else ""
        return self.deploy_order + later

    @property
    def undeclared(self) -> bool:
        """The old app breaks and migration.toml does not say so (with the reason)."""
        return bool(self.old_app_breaks) and not self.declared

    def to_dict(self) -> dict[str, Any]:
        return {
            "deploy_order": self.deploy_order,
            "deploy_before": self.deploy_before,
            "declared": self.declared,
            "undeclared": self.undeclared,
            "old_app_breaks": list(self.old_app_breaks),
            "new_needs_new_schema": list(self.new_needs_new_schema),
            "failed_under_load": list(self.failed_under_load),
            "refused_under_load": list(self.refused_under_load),
            "queries": [q.to_dict() for q in self.queries],
            "inserts": [i.to_dict() for i in self.inserts],
        }


def check_old_app(
    before: psycopg.Connection[Any],
    after: psycopg.Connection[Any],
    workloads: Sequence[Workload],
    pools: dict[str, dict[str, ParameterPool]],
    applied_before: Sequence[str],
    applied_after: Sequence[str],
    *,
    declared: str = "",
    deploy_before: str = "",
    failed: Mapping[str, int] | None = None,
    seed: int = 1,
) -> OldAppCheck:
    """Run the old app's SQL and INSERTs on the state after a step, and the new app's SQL
    on the state before it (both connections in autocommit mode; nothing is written).
    ``failed``: the requests that failed while the step was rehearsed under traffic
    (``Availability.failed``); ``declared`` and ``deploy_before``: what the migration says."""
    queries: list[QueryCompatibility] = []
    for workload in workloads:
        for query in workload.queries.values():
            old_variant, old_sql = query.sql_for(applied_before)
            new_variant, new_sql = query.sql_for(applied_after)
            (old_on_new,) = compare_results(after, after, [query], pools[workload.name],
                                            applied_before, applied_after, seed=seed)  # fmt: skip
            queries.append(
                QueryCompatibility(
                    query.name,
                    old_variant,
                    new_variant,
                    "same" if old_on_new.same else old_on_new.detail,
                    "unchanged"
                    if new_sql == old_sql
                    else _runs(before, query, new_sql, pools[workload.name], seed),
                )
            )
    inserts = tuple(
        InsertCompatibility(table, _inserts(before, after, table, seed)) for table in WRITE_TABLES
    )
    failures = sorted((failed or {}).items())
    refused = tuple(f"{n} {key}" for key, n in failures if refused_by_constraint(key))
    broke = tuple(
        f"{n} {key}" for key, n in failures if " error " in key and not refused_by_constraint(key)
    )
    return OldAppCheck(tuple(queries), tuple(i for i in inserts if i.result), declared,
                       broke, refused, deploy_before)  # fmt: skip


def _runs(
    conn: psycopg.Connection[Any],
    query: Query,
    sql_text: SqlText,
    pools: dict[str, ParameterPool],
    seed: int,
) -> str:
    params = ParameterStream(pools, set(sql_text.params), seed, f"{query.name}/old-app").draw()
    try:
        with conn.transaction(force_rollback=True):
            PreparedStatements().execute(conn, sql_text, params)  # as the app sends it
    except psycopg.Error as exc:
        return f"fails: {_error(exc)}"
    return "works"


def _inserts(
    before: psycopg.Connection[Any], after: psycopg.Connection[Any], table: str, seed: int
) -> str:
    """ "works", "fails: ..." for the old app's INSERT on the new schema; "" when the table
    has no rows to copy."""
    found = app_inserts(before, table, 5, seed, also_in=after)
    if found is None:
        return ""
    statement, rows = found
    refused: list[str] = []
    for values in rows:
        try:
            # Prepared afresh each time: the rollback may deallocate what was prepared
            # (psycopg does, once it has prepared statements of its own on the connection).
            with after.transaction(force_rollback=True):
                PreparedStatements().execute(after, statement, values)
        except psycopg.Error as exc:
            if not (exc.sqlstate or "").startswith("23"):
                return f"fails: {_error(exc)}"
            refused.append(_error(exc))
    if len(refused) == len(rows):
        return f"fails: every probe row refused: {refused[0]}"
    if refused:
        return f"works; refused {len(refused)} of {len(rows)} probe rows: {refused[0]}"
    return "works"


def _error(exc: psycopg.Error) -> str:
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    return f"{message} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else message
