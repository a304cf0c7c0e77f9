"""``vpbench ab``: measure two databases (or servers) in one paired session, execution by
execution, so that machine drift hits both alike and timing can be compared."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from vpbench.analysis.session_verdicts import SessionVerdicts
from vpbench.measure.interleave import PairedOptions, measure_paired
from vpbench.measure.metadata import collect_metadata
from vpbench.measure.run import known_migration_ids
from vpbench.migrations.ledger import applied_migrations
from vpbench.migrations.sources import MigrationsLocation
from vpbench.results.documents import (
    KIND_AB,
    SCHEMA_VERSION,
    results_folder,
    utc_stamp,
    write_document,
)
from vpbench.server.buffers import buffer_evictor
from vpbench.server.target import (
    ServerTarget,
    database_or_dsn,
    open_connection,
    server_address,
)
from vpbench.workload.preflight import check_prepared
from vpbench.workload.sampling import load_workload_pools
from vpbench.workload.spec import load_workloads


@dataclass(frozen=True)
class AbOutcome:
    path: Path
    labels: tuple[str, str]


def resolve_side(target: ServerTarget, value: str, option: str) -> tuple[str, str]:
    """(conninfo, label) for a database name on the target server, or a DSN of its own
    (named by ``option`` in the error when it is malformed)."""
    conninfo, named_by_dsn = database_or_dsn(target, value, option)
    if not named_by_dsn:
        return conninfo, value
    return conninfo, f"{server_address(conninfo)}/{conninfo_to_dict(conninfo).get('dbname')}"


def run_ab(
    target: ServerTarget,
    a: str,
    b: str,
    workload_paths: Sequence[Path],
    options: PairedOptions,
    *,
    out_dir: Path,
    migrations_dir: MigrationsLocation | None = None,
    label: str | None = None,
    side_labels: tuple[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> AbOutcome:
    """Measure both sides with the same parameters (pools drawn from A) and write one
    ``ab`` document; ``vpbench compare`` on it judges B against A as a paired session.
    The sides are labelled by database (or ``host:port/db``) unless ``side_labels``;
    ``metadata`` adds to (or overrides) what the document's metadata records."""
    workloads = load_workloads(workload_paths, known_migration_ids(migrations_dir))
    with results_folder(out_dir):
        (conn_a, label_a), (conn_b, label_b) = (resolve_side(target, a, "--a"),
                                                resolve_side(target, b, "--b"))  # fmt: skip
        if side_labels is not None:
            label_a, label_b = side_labels
        with open_connection(conn_a, autocommit=True, source="--a") as conn:
            applied_a = applied_migrations(conn)
            check_prepared(conn, workloads, applied_a)
            pools = load_workload_pools(conn, workloads)
            recorded = collect_metadata(
                conn,
                server=label_a,
                label=label,
                options=asdict(options),
                workload_paths=[str(p) for p in workload_paths],
                applied_migrations=applied_a,
            ) | (metadata or {})
        with open_connection(conn_b, autocommit=True, source="--b") as conn:
            applied_b = applied_migrations(conn)
            check_prepared(conn, workloads, applied_b)
        same_server = target.for_database(a) == conn_a and target.for_database(b) == conn_b
        with buffer_evictor(target) if same_server else nullcontext() as evict:
            session = measure_paired(
                conn_a, conn_b, workloads, pools, applied_a, applied_b, options, before_round=evict
            )
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND_AB,
            "metadata": recorded | {"b_server": label_b, "b_applied_migrations": list(applied_b)},
            "labels": {"before": label_a, "after": label_b},
            "session": {"rounds": session.rounds, "seconds": session.seconds},
            "before": [e.to_document() for e in session.before],
            "after": [e.to_document() for e in session.after],
            "verdicts": SessionVerdicts.judge(session.before, session.after).to_dict(),
        }
        path = write_document(document, out_dir / f"{utc_stamp()}-ab-{label or 'run'}.json")
        return AbOutcome(path, (label_a, label_b))
