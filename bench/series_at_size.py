"""The reference series applied one step at a time on a seeded size, as ``steps`` applies
it at rest (each ``up`` on a settled database), without the rest of its checks: per step
the wall time, the longest hold of each lock that blocks the app, and the WAL written; then
the final state's queries measured with ``vpbench run``. ``steps --profile large`` would
take hours (its backups, audits, paired rounds and down checks, on 10M-row tables); this is
the part a prediction and the issue's series table need.

    python bench/series_at_size.py --profile large [--fit DIR ...] [--out DIR]
        [--under-load | --under-load-from MIGRATION]

With ``--under-load`` each ``up`` runs under the app's live traffic, as ``migrate up
--under-load`` runs it (lock_timeout at most half the stall budget), and the longest wait of
a read and of a write on the migration's locks, the failed requests and the verdict against
the budget are recorded beside its duration. ``--under-load-from 0005_...`` applies the
steps before that one at rest (their figures are then the at-rest ones) and the rest under
the traffic, for when the whole series under traffic would not fit in one sitting.

With ``--fit`` (``steps`` results folders of the series at smaller sizes, e.g.
``bench/predict.py --at-rest``'s), each step's duration and lock holds are predicted
before it runs, at the rows it finds (``count(*)`` of the tables it touched at those
sizes), and printed beside what it then measures, with the error. Runs on the server
``VPBENCH_DSN`` names, else the embedded one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from vpbench.analysis.prediction import (
    DEFAULT_BUDGET_MS,
    FigurePrediction,
    longest_blocking_holds,
    predict_series,
    read_series_run,
)
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.availability import describe_availability
from vpbench.migrations.apply import StepApplied, apply_step
from vpbench.migrations.folder import Migration
from vpbench.migrations.ledger import ensure_ledger
from vpbench.migrations.locking import DEFAULT_LOCKS
from vpbench.migrations.sources import discover_migrations
from vpbench.reporting.prediction_report import error_text, predicted_text, value_text
from vpbench.reporting.units import elapsed, human_bytes
from vpbench.server.maintenance import settle
from vpbench.server.target import ServerTarget, resolve_target
from vpbench.steps.rehearsal import apply_under_traffic

APP_TABLES = ("users", "courses", "videos", "quiz_attempts", "reflections")


def rows_now(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """Every app table's rows, counted."""
    return {
        table: float(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone()[0])  # type: ignore[index]
        for table in APP_TABLES
    }  # fmt: skip


def judged(found: FigurePrediction, value: float) -> str:
    """The prediction, the value measured and the error."""
    measured = replace(found, measured=value)
    return (f"{found.label}: predicted {predicted_text(found)}, measured "
            f"{error_text(measured) or value_text(found, value)}")  # fmt: skip


def apply(
    conn: psycopg.Connection[Any],
    target: ServerTarget,
    name: str,
    migration: Migration,
    migrations: Sequence[Migration],
    under_load: bool,
) -> tuple[StepApplied, dict[str, Any]]:
    """``up`` of ``migration``, at rest or under the app's traffic; with the traffic, what
    the app saw of it."""
    if not under_load:
        return apply_step(conn, migration, "up"), {}
    applied, found = apply_under_traffic(
        target, name, conn, migration, migrations, DEFAULT_LOCKS,
        default_workload_paths(), DEFAULT_BUDGET_MS,
    )  # fmt: skip
    print(f"  {describe_availability(found)}", flush=True)
    return applied, {
        "blocked_ms": found.blocked_ms, "blocked_requests": found.blocked_requests,
        "failed": found.failed, "requests": found.requests, "passed": found.passed,
        "budget_ms": found.budget_ms, "failure": found.failure,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="large")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fit", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=Path("results/bench-series-at-size"))
    loads = parser.add_mutually_exclusive_group()
    loads.add_argument("--under-load", action="store_true")
    loads.add_argument("--under-load-from", metavar="MIGRATION")
    options = parser.parse_args()
    migrations = discover_migrations()
    ids = [migration.id for migration in migrations]
    if options.under_load_from is not None and options.under_load_from not in ids:
        parser.error(f"--under-load-from: no migration {options.under_load_from!r} "
                     f"(the series: {', '.join(ids)})")  # fmt: skip
    first_loaded = 0 if options.under_load else (
        ids.index(options.under_load_from) if options.under_load_from else len(ids))  # fmt: skip
    options.out.mkdir(parents=True, exist_ok=True)
    target = resolve_target()
    name = f"bench_series_{options.profile}"
    began = time.perf_counter()
    seed_database(target, name, get_profile(options.profile), seed=options.seed, force=True)
    print(f"seeded {options.profile} in {time.perf_counter() - began:.0f} s", flush=True)
    fitted = [read_series_run(folder) for folder in options.fit]
    rows: list[dict[str, Any]] = []
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        ensure_ledger(conn)
        for index, migration in enumerate(migrations):
            settle(conn, checkpoint=True)
            counted = rows_now(conn)
            predicted = {
                f.key: f
                for step in (predict_series(fitted, counted, "counted").steps if fitted else ())
                if step.migration == migration.id
                for f in step.figures
            }
            wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            applied, app = apply(conn, target, name, migration, migrations, index >= first_loaded)
            wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", [wal_before]
                               ).fetchone()[0]  # type: ignore[index]  # fmt: skip
            holds = longest_blocking_holds(applied.lock_holds, APP_TABLES)
            measured = {"duration": applied.seconds} | {f"lock {k}": v for k, v in holds.items()}
            if app:
                measured["stall"] = max(app["blocked_ms"].values()) / 1000
            print(f"{migration.id}: {elapsed(applied.seconds)}, WAL {human_bytes(float(wal))}",
                  flush=True)  # fmt: skip
            for key, value in measured.items():
                if key in predicted:
                    print(f"  {judged(predicted[key], value)}", flush=True)
            rows.append({"migration": migration.id, "rows": counted, "seconds": applied.seconds,
                         "wal_bytes": float(wal), "measured": measured, "under_load": app,
                         "predicted": {k: [f.predicted.value, f.predicted.low, f.predicted.high]
                                       for k, f in predicted.items() if f.predicted}})  # fmt: skip
            (options.out / "series.json").write_text(json.dumps(rows, indent=1))
        settle(conn, checkpoint=True)
    command = [sys.executable, "-m", "vpbench", "run", "--dsn", target.for_database(name),
               "--label", f"final-{options.profile}", "--out", str(options.out)]  # fmt: skip
    subprocess.run(command, check=True)
    total = sum(r["seconds"] for r in rows)
    print(f"series: {elapsed(total)} of migrate up in all", flush=True)


if __name__ == "__main__":
    main()
