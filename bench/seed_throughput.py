"""Seeding throughput: ``vpbench seed`` end to end vs a bare psycopg COPY of ready rows.

    python bench/seed_throughput.py [--profile medium] [--rounds 2] [--dsn DSN]

The baseline loads the very same rows (pre-generated, untimed, held in memory as tuples)
with a plain ``COPY ... FROM STDIN`` and ``write_row`` into the same empty schema. Rounds
alternate baseline / vpbench so drift on this shared machine hits both alike. Target:
vpbench (generation, COPY and ANALYZE included) >= 0.5x the baseline rate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from psycopg import sql

from vpbench.dataset.fixtures import legacy_schema_sql
from vpbench.dataset.generate import LegacyDataset, build_dataset
from vpbench.dataset.profiles import DirtyRates, get_profile
from vpbench.dataset.seed import seed_database
from vpbench.server.databases import drop_database, ensure_database
from vpbench.server.target import ServerTarget, connect, resolve_target

Rows = dict[str, tuple[tuple[str, ...], list[tuple[str | None, ...]]]]


def pregenerate(dataset: LegacyDataset) -> Rows:
    """The dataset as Python tuples, decoded from COPY text (NULL becomes None)."""
    tables: Rows = {}
    for table in dataset.tables:
        rows: list[tuple[str | None, ...]] = []
        for chunk in table.chunks(dataset.seed):
            for line in chunk.text.splitlines():
                rows.append(
                    tuple(
                        None if field == "\\N" else field.replace("\\n", "\n")
                        for field in line.split("\t")
                    )
                )
        tables[table.name] = (table.columns, rows)
    return tables


def bare_copy(target: ServerTarget, dbname: str, tables: Rows) -> float:
    """Seconds to load ``tables`` with a plain COPY into a fresh legacy schema."""
    with connect(target, dbname) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute(legacy_schema_sql())
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for name, (columns, rows) in tables.items():
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with cur.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def vpbench_seed(target: ServerTarget, dbname: str, profile_name: str, seed: int) -> float:
    started = time.perf_counter()
    seed_database(target, dbname, get_profile(profile_name), seed=seed)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default="medium")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)

    target = resolve_target(args.dsn)
    profile = get_profile(args.profile)
    baseline_db, vpbench_db = "vpbench_bench_baseline", "vpbench_bench_seed"
    for name in (baseline_db, vpbench_db):
        ensure_database(target, name)
    print(f"server: {target.describe()} ({target.source}); profile {profile.name}, "
          f"{profile.total_rows:,} rows")  # fmt: skip
    started = time.perf_counter()
    tables = pregenerate(build_dataset(profile, args.seed, DirtyRates()))
    rows = sum(len(r) for _, r in tables.values())
    print(f"pre-generated {rows:,} baseline rows in {time.perf_counter() - started:.1f}s")

    baseline, ours = [], []
    try:
        for round_number in range(1, args.rounds + 1):
            baseline.append(rows / bare_copy(target, baseline_db, tables))
            ours.append(rows / vpbench_seed(target, vpbench_db, profile.name, args.seed))
            print(f"round {round_number}: bare COPY {baseline[-1]:,.0f} rows/s, "
                  f"vpbench seed {ours[-1]:,.0f} rows/s")  # fmt: skip
    finally:
        for name in (baseline_db, vpbench_db):
            drop_database(target, name)
    result = {
        "rows": rows,
        "bare_copy_rows_per_s": statistics.median(baseline),
        "vpbench_rows_per_s": statistics.median(ours),
    }
    ratio = result["vpbench_rows_per_s"] / result["bare_copy_rows_per_s"]
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"median bare COPY {result['bare_copy_rows_per_s']:,.0f} rows/s; "
          f"median vpbench seed {result['vpbench_rows_per_s']:,.0f} rows/s; "
          f"ratio {ratio:.2f}x ({verdict} the >= 0.5x target)")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
