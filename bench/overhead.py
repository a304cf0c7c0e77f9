"""vpbench's measuring overhead against pgbench, and the cost of EXPLAIN ANALYZE runs.

    python bench/overhead.py [--profile small] [--rounds 3] [--repeat 300] [--clients 1] [--dsn DSN]

Two statements with fixed parameters — a primary-key lookup and the video page's "quiz
attempts for this video" query — are timed by ``vpbench run`` and by ``pgbench -n -M
prepared`` with a custom script and per-transaction logging, in alternating rounds on one
seeded database. Target: vpbench p50 within 1.10x of pgbench at 1 client.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from vpbench.backup import postgres_program
from vpbench.databases import database_state
from vpbench.measure import RunOptions
from vpbench.profiles import get_profile
from vpbench.run import run_workloads
from vpbench.seed import seed_database
from vpbench.server import ServerTarget, resolve_target

DATABASE = "vpbench_bench_overhead"


def statements(conninfo: str) -> dict[str, str]:
    """The two statements, with parameters fixed to a busy user's attempts on one video."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT user_id::text, video_id::text FROM quiz_attempts "
            "GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1"
        ).fetchone()
    assert row is not None
    user_id, video_id = row
    return {
        "pk_lookup": f"SELECT * FROM users WHERE id = '{user_id}'",
        "quiz_attempts_for_video": (
            "SELECT id, score, total, percentage, started_at, completed_at FROM quiz_attempts "
            f"WHERE user_id = '{user_id}' AND video_id = '{video_id}' "
            "ORDER BY completed_at DESC LIMIT 20"
        ),
    }


def pgbench_p50_ms(conninfo: str, sql: str, repeat: int, clients: int, folder: Path) -> float:
    """p50 latency from pgbench's per-transaction log (-l), in milliseconds."""
    script = folder / "script.sql"
    script.write_text(sql + ";\n")
    params = conninfo_to_dict(conninfo)
    prefix = folder / f"log{time.monotonic_ns()}"
    pgbench = postgres_program("pgbench")
    subprocess.run(
        [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
         "-t", str(repeat), "-f", str(script), "-l", f"--log-prefix={prefix}",
         "-h", str(params.get("host", "127.0.0.1")), "-p", str(params.get("port", 5432)),
         "-U", str(params.get("user", "postgres")), str(params["dbname"])],
        check=True, capture_output=True, text=True, cwd=folder,
    )  # fmt: skip
    latencies_us = [
        int(line.split()[2])
        for log in folder.glob(f"{prefix.name}*")
        for line in log.read_text().splitlines()
    ]
    for log in folder.glob(f"{prefix.name}*"):
        log.unlink()
    return statistics.median(latencies_us) / 1000


def vpbench_p50_ms(
    target: ServerTarget, name: str, sql: str, repeat: int, clients: int, folder: Path
) -> float:
    workload = folder / f"{name}.toml"
    workload.write_text(f"[queries.{name}]\nsql = '''\n{sql}\n'''\n")
    options = RunOptions(warmup=10, repeat=repeat, explain=0, clients=clients, seed=1)
    outcome = run_workloads(target, DATABASE, [workload], options, out_dir=folder / "runs")
    (entry,) = outcome.entries
    assert entry.latency is not None
    return entry.latency.p50_ms


def explain_cost(conninfo: str, sql: str, repeat: int) -> tuple[float, float]:
    """Median client time of the plain statement and of EXPLAIN (ANALYZE, BUFFERS) on it."""
    plain: list[int] = []
    explained: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for _ in range(repeat):
            for bucket, text in ((plain, sql), (explained, f"EXPLAIN (ANALYZE, BUFFERS) {sql}")):
                began = time.perf_counter_ns()
                conn.execute(text).fetchall()
                bucket.append(time.perf_counter_ns() - began)
    return statistics.median(plain) / 1e6, statistics.median(explained) / 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)

    target = resolve_target(args.dsn)
    if not database_state(target, DATABASE).exists:
        seed_database(target, DATABASE, get_profile(args.profile), seed=1)
    conninfo = target.for_database(DATABASE)
    where = f"{target.describe(DATABASE)} ({target.source})"
    print(f"server {where}; pgbench: {postgres_program('pgbench')}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        for name, sql in statements(conninfo).items():
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(vpbench_p50_ms(target, name, sql, args.repeat, args.clients, folder))
                theirs.append(pgbench_p50_ms(conninfo, sql, args.repeat, args.clients, folder))
            vp, pg = statistics.median(ours), statistics.median(theirs)
            plain, explained = explain_cost(conninfo, sql, args.repeat // 2)
            results[name] = {"vpbench_p50_ms": vp, "pgbench_p50_ms": pg, "ratio": vp / pg,
                             "plain_ms": plain, "explain_analyze_ms": explained}  # fmt: skip
            verdict = "within" if vp / pg <= 1.10 else "OUTSIDE"
            print(f"{name}: vpbench p50 {vp:.3f} ms, pgbench p50 {pg:.3f} ms, ratio "
                  f"{vp / pg:.2f}x ({verdict} 1.10x); rounds vpbench "
                  f"{', '.join(f'{v:.3f}' for v in ours)} / pgbench "
                  f"{', '.join(f'{v:.3f}' for v in theirs)}")  # fmt: skip
            print(f"{name}: plain {plain:.3f} ms, EXPLAIN (ANALYZE, BUFFERS) {explained:.3f} ms "
                  f"(+{explained / plain - 1:.0%})")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
