"""``vpbench run``: validate workloads, measure them on one database, write the run document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vpbench.errors import FixtureError
from vpbench.measure.metadata import collect_metadata
from vpbench.measure.runner import EntryResult, MeasureProgress, RunOptions, measure_workloads
from vpbench.migrations.ledger import applied_migrations
from vpbench.migrations.sources import MigrationsLocation, migration_ids
from vpbench.results.documents import results_folder, run_document, run_file_name, write_document
from vpbench.server.target import ServerTarget, connect
from vpbench.workload.preflight import check_prepared
from vpbench.workload.spec import load_workloads

DEFAULT_OUT = Path("results")


@dataclass(frozen=True)
class RunOutcome:
    path: Path
    metadata: dict[str, Any]
    entries: tuple[EntryResult, ...]

    @property
    def failures(self) -> tuple[EntryResult, ...]:
        return tuple(e for e in self.entries if e.status == "error")


def known_migration_ids(folder: MigrationsLocation | None) -> tuple[str, ...]:
    """Migration ids workload variants may name; none when the default folder is absent."""
    try:
        return migration_ids(folder)
    except FixtureError:
        if folder is not None:
            raise
        return ()


def run_workloads(
    target: ServerTarget,
    dbname: str,
    workload_paths: Sequence[str | Path],
    options: RunOptions,
    *,
    label: str | None = None,
    out_dir: Path = DEFAULT_OUT,
    migrations_dir: MigrationsLocation | None = None,
    progress: MeasureProgress | None = None,
) -> RunOutcome:
    """Measure the workloads and write one results document; nothing is written on failure
    to start, or on Ctrl-C."""
    workloads = load_workloads(workload_paths, known_migration_ids(migrations_dir))
    with results_folder(out_dir):
        with connect(target, dbname, autocommit=True) as conn:
            applied = applied_migrations(conn)
            check_prepared(conn, workloads, applied)
            metadata = collect_metadata(
                conn,
                server=f"{target.describe(dbname)} ({target.source})",
                label=label,
                options=asdict(options),
                workload_paths=[str(p) for p in workload_paths],
                applied_migrations=applied,
            )
        entries = measure_workloads(
            target.for_database(dbname),
            workloads,
            options,
            applied_migrations=applied,
            progress=progress,
        )
        path = write_document(
            run_document(metadata, [e.to_document() for e in entries]),
            out_dir / run_file_name(label),
        )
        return RunOutcome(path, metadata, entries)
