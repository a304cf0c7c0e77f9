"""vpbench's measuring overhead against pgbench, and what EXPLAIN ANALYZE adds.

    python bench/overhead.py [--scale 10] [--rounds 5] [--repeat 2000] [--dsn DSN]

Baseline: ``pgbench -S -M prepared -l`` (its built-in select-only script: a primary-key
lookup of ``pgbench_accounts`` with a uniformly random key) on ``pgbench -i -s SCALE`` data.
vpbench times the same statement with the same key distribution (``vpbench run``, one
client); a bare psycopg ``PQexecPrepared`` loop shows the floor of a Python client. The
three alternate round by round on the same server and database; each round's figure is
the median per-transaction latency (pgbench's from its ``-l`` log), and the ratios are
medians over rounds with a bootstrap interval, every round shown.
Target: vpbench within 1.10x of pgbench (aim 1.05x).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from vpbench.analysis.verdicts import paired_ratio
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.server.backup import postgres_program
from vpbench.server.databases import ensure_database
from vpbench.server.target import ServerTarget, resolve_target

DATABASE = "vpbench_bench_overhead"
STATEMENT = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid"


CLIENT_CORE: set[int] = set()
"""the core every client (vpbench, pgbench, psycopg) runs on, once ``same_placement`` pins"""


@contextmanager
def same_placement(target: ServerTarget) -> Iterator[str]:
    """Every client on the first core, every backend on the last one, for all three tools
    alike: the postmaster is pinned, so the backends it forks inherit its core. Without it
    a round's figure depends on where its backend landed (bimodal: 0.02 or 0.065 ms)."""
    cores = sorted(os.sched_getaffinity(0))
    with psycopg.connect(target.for_database(DATABASE)) as conn:
        backend = conn.info.backend_pid
    try:
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        before = os.sched_getaffinity(postmaster)
        os.sched_setaffinity(postmaster, {cores[-1]})
    except (OSError, ValueError, IndexError):
        yield "not pinned (the server is not a local process this user may pin)"
        return
    os.sched_setaffinity(0, {cores[0]})
    CLIENT_CORE.add(cores[0])
    try:
        yield f"clients on core {cores[0]}, server backends on core {cores[-1]}"
    finally:
        CLIENT_CORE.clear()
        os.sched_setaffinity(0, set(cores))
        os.sched_setaffinity(postmaster, before)


def _pgbench(target: ServerTarget, *args: str, cwd: Path | None = None) -> None:
    params = conninfo_to_dict(target.for_database(DATABASE))
    core = set(CLIENT_CORE)
    subprocess.run(
        [postgres_program("pgbench"), *args,
         "-h", str(params.get("host", "127.0.0.1")), "-p", str(params.get("port", 5432)),
         "-U", str(params.get("user", "postgres")), DATABASE],
        check=True, capture_output=True, text=True, cwd=cwd,
        preexec_fn=(lambda: os.sched_setaffinity(0, core)) if core else None,
    )  # fmt: skip


def prepare(target: ServerTarget, scale: int) -> None:
    """pgbench's own schema at ``scale``, kept between runs of this benchmark."""
    ensure_database(target, DATABASE)
    with psycopg.connect(target.for_database(DATABASE)) as conn:
        exists = conn.execute("SELECT to_regclass('pgbench_branches') IS NOT NULL").fetchone()
        row = (
            conn.execute("SELECT count(*) FROM pgbench_branches").fetchone()
            if exists and exists[0]
            else None
        )
    if not (row and row[0] == scale):
        _pgbench(target, "-i", "-q", "-s", str(scale))


def pgbench_median_ms(target: ServerTarget, repeat: int, folder: Path) -> float:
    """Median per-transaction latency of ``pgbench -S -M prepared``, from its -l log."""
    prefix = folder / f"log{time.monotonic_ns()}"
    _pgbench(target, "-n", "-S", "-M", "prepared", "-c", "1", "-t", str(repeat), "-l",
             f"--log-prefix={prefix}", cwd=folder)  # fmt: skip
    logs = list(folder.glob(f"{prefix.name}*"))
    latencies_us = [int(line.split()[2]) for log in logs for line in log.read_text().splitlines()]
    for log in logs:
        log.unlink()
    return statistics.median(latencies_us) / 1000


def vpbench_median_ms(target: ServerTarget, scale: int, repeat: int, folder: Path) -> float:
    workload = folder / "pk_lookup.toml"
    workload.write_text(
        f"[params.aid]\nrange = [1, {100_000 * scale}]\n\n"
        f'[queries.pk_lookup]\nsql = "{STATEMENT}"\n'
    )
    options = RunOptions(warmup=20, repeat=repeat, explain=0, clients=1, seed=time.time_ns())
    outcome = run_workloads(target, DATABASE, [workload], options, out_dir=folder / "runs")
    (entry,) = outcome.entries
    assert entry.latency is not None
    return entry.latency.p50_ms


def psycopg_median_ms(target: ServerTarget, scale: int, repeat: int, seed: int) -> float:
    """The floor for any Python client: a bare loop of psycopg's ``PQexecPrepared`` with
    random keys, nothing else between executions."""
    rng = random.Random(seed)
    keys = [str(rng.randint(1, 100_000 * scale)).encode() for _ in range(repeat + 20)]
    samples = []
    with psycopg.connect(target.for_database(DATABASE), autocommit=True) as conn:
        pgconn = conn.pgconn
        pgconn.prepare(b"lookup", STATEMENT.replace(":aid", "$1").encode())
        for key in keys:
            began = time.perf_counter_ns()
            pgconn.exec_prepared(b"lookup", [key])
            samples.append(time.perf_counter_ns() - began)
    return statistics.median(samples[20:]) / 1e6


def explain_cost(target: ServerTarget, repeat: int) -> dict[str, float]:
    """Median client time of the plain lookup, with EXPLAIN ANALYZE, and with TIMING OFF."""
    variants = {
        "plain": "",
        "explain_analyze": "EXPLAIN (ANALYZE, BUFFERS) ",
        "timing_off": "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) ",
    }
    times: dict[str, list[int]] = {name: [] for name in variants}
    with psycopg.connect(target.for_database(DATABASE), autocommit=True) as conn:
        for i in range(repeat):
            for name, prefix in variants.items():
                began = time.perf_counter_ns()
                conn.execute(f"{prefix}SELECT abalance FROM pgbench_accounts WHERE aid = {i + 1}")
                times[name].append(time.perf_counter_ns() - began)
    return {name: statistics.median(ns) / 1e6 for name, ns in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)

    target = resolve_target(args.dsn)
    prepare(target, args.scale)
    print(f"server {target.describe(DATABASE)} ({target.source}); pgbench "
          f"{postgres_program('pgbench')}; -s {args.scale}, {args.rounds} rounds x "
          f"{args.repeat} transactions each")  # fmt: skip
    ours: list[float] = []
    theirs: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory() as temp, same_placement(target) as placement:
        print(f"placement: {placement}")
        folder = Path(temp)
        for number in range(args.rounds):
            tools = ["vpbench", "pgbench", "psycopg"]
            for tool in tools if number % 2 == 0 else tools[::-1]:
                if tool == "vpbench":
                    ours.append(vpbench_median_ms(target, args.scale, args.repeat, folder))
                elif tool == "pgbench":
                    theirs.append(pgbench_median_ms(target, args.repeat, folder))
                else:
                    floor.append(psycopg_median_ms(target, args.scale, args.repeat, number))
    vp, pg = statistics.median(ours), statistics.median(theirs)
    ratios = [v / p for v, p in zip(ours, theirs, strict=True)]
    # A backend that lands on the client's core answers twice as fast; each round starts
    # new backends for both tools, so single rounds scatter and the ratio is judged over
    # rounds, with a bootstrap interval of its median.
    estimate = paired_ratio(theirs, ours, list(range(len(ours))), seed=1)
    assert estimate is not None
    ratio = estimate[0]
    verdict = "within" if ratio.high <= 1.10 else "not shown within"
    print(f"pk_lookup: vpbench p50 {vp:.4f} ms, pgbench -S -M prepared per-transaction median "
          f"{pg:.4f} ms; median of per-round ratios {ratio.ratio:.3f}x (95% CI "
          f"{ratio.low:.3f}-{ratio.high:.3f}; {verdict} 1.10x); per round vpbench "
          f"{', '.join(f'{v:.4f}' for v in ours)} / pgbench {', '.join(f'{v:.4f}' for v in theirs)}"
          f" / ratio {', '.join(f'{r:.3f}' for r in ratios)}")  # fmt: skip
    bare = paired_ratio(floor, ours, list(range(len(ours))), seed=1)
    assert bare is not None
    print(f"pk_lookup: bare psycopg PQexecPrepared loop p50 {statistics.median(floor):.4f} ms; "
          f"vpbench / bare psycopg {bare[0].ratio:.3f}x (95% CI {bare[0].low:.3f}-"
          f"{bare[0].high:.3f}); per round {', '.join(f'{v:.4f}' for v in floor)}")  # fmt: skip
    explained = explain_cost(target, args.repeat // 2)
    print(f"EXPLAIN cost on the lookup (psycopg client time): plain {explained['plain']:.4f} ms, "
          f"EXPLAIN (ANALYZE, BUFFERS) {explained['explain_analyze']:.4f} ms "
          f"(+{explained['explain_analyze'] / explained['plain'] - 1:.0%}), TIMING OFF "
          f"{explained['timing_off']:.4f} ms "
          f"(+{explained['timing_off'] / explained['plain'] - 1:.0%})")  # fmt: skip
    return {"vpbench_ms": vp, "pgbench_ms": pg, "ratio": ratio.ratio, "ci": (ratio.low, ratio.high),
            "rounds": ratios, **explained}  # fmt: skip


if __name__ == "__main__":
    main()
