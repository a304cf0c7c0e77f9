"""``steps --from`` a team's copy against ``steps --profile`` on the same data: the same
verdicts and figures within the paired intervals, and what the copy of the source cost by
each method.

    python bench/from_copy.py [--profile medium] [--seed 1] [--out FILE]

On the embedded server: ``steps --profile P`` seeds and runs the reference series (A); the
same profile and seed, seeded into a database vpbench did not create (as a team's staging
copy, restored from ``pg_dump``), is copied by each method — a template copy (a clone
where the filesystem shares blocks) while it is idle, a snapshot-consistent dump and
restore while a session is open on it — and ``steps --from`` it runs the same series (B).
Per step: the paired ratio [95% interval] of the video page and two voice-memo queries in
A and in B, their verdicts, whether the intervals overlap, and each step's pass,
reversibility and longest blocked waits under traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from vpbench.analysis.comparison import compare_sides, load_sides
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.server.backup import restore_dump, run_client
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.source_copy import copy_from_database, inspect_source
from vpbench.server.target import ServerTarget

ENTRIES = ("video_page", "long_memos_in_course", "recorded_time_per_course")


def steps(args: list[str], out: Path, dsn: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {"VPBENCH_DSN": dsn, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    began = time.perf_counter()
    command = [sys.executable, "-m", "vpbench", "steps", *args, "--out", str(out), "--no-report"]
    done = subprocess.run(command, env=env, text=True, capture_output=True, check=False)
    if done.returncode not in (0, 1):
        sys.exit(f"steps {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - began


def figures(out: Path) -> dict[str, dict[str, Any]]:
    """Per step: the paired ratio and verdict of the watched entries, blocked seconds."""
    summary = json.loads((out / "summary.json").read_text())
    found: dict[str, dict[str, Any]] = {}
    for row in summary["steps"]:
        path = out / row["document"]
        document = json.loads(path.read_text())
        before, after, paired = load_sides([path])
        comparison = compare_sides(before, after, paired_session=paired)
        entries = {
            c.name: {"ratio": c.judgement.estimate.ratio, "low": c.judgement.estimate.low,
                     "high": c.judgement.estimate.high, "verdict": c.judgement.verdict}
            for c in comparison.rows if c.name in ENTRIES
        }  # fmt: skip
        blocked = (document.get("availability") or {}).get("blocked_ms", {})
        found[row["migration"]] = {"entries": entries, "blocked": blocked,
                                   "passed": row["passed"],
                                   "reversible": row["reversible"]}  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="medium")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/bench-from-copy"))
    options = parser.parse_args()
    server = EmbeddedPostgres()
    dsn = server.start().dsn("postgres")
    target = ServerTarget(dsn, "bench")
    options.out.mkdir(parents=True, exist_ok=True)
    seeded, staging = "bench_from_seeded", "bench_from_staging"
    began = time.perf_counter()
    seed_database(target, seeded, get_profile(options.profile), seed=options.seed, force=True)
    seed_s = time.perf_counter() - began
    dump = options.out / "staging.dump"
    began = time.perf_counter()
    run_client("pg_dump", ["--format=custom", f"--file={dump}"], target.for_database(seeded))
    dump_s, dump_mb = time.perf_counter() - began, dump.stat().st_size / 1024**2
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in (staging, "bench_from_t", "bench_from_d", seeded):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging)))
    began = time.perf_counter()
    restore_dump(dump, target.for_database(staging))
    restore_s = time.perf_counter() - began
    idle = copy_from_database(target, inspect_source(target, staging), "bench_from_t")
    with psycopg.connect(target.for_database(staging)) as other:
        other.execute("SELECT 1")  # a session on it: the dump path
        busy = copy_from_database(target, inspect_source(target, staging), "bench_from_d")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("bench_from_t", "bench_from_d"):
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    a_s = steps(["--profile", options.profile, "--seed", str(options.seed), "--db",
                 "bench_from_a", "--force"], options.out / "a", dsn)  # fmt: skip
    b_s = steps(["--from", staging, "--force", "--db", "bench_from_b"], options.out / "b", dsn)
    a, b = figures(options.out / "a"), figures(options.out / "b")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the databases this bench made
        for name in (staging, "bench_from_a", "bench_from_b"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip
    dump.unlink()
    print(f"profile {options.profile} (seed {options.seed}); seeding {seed_s:.0f} s, "
          f"pg_dump {dump_s:.0f} s ({dump_mb:,.0f} MB), "
          f"pg_restore {restore_s:.0f} s")  # fmt: skip
    print(f"copy of the idle source: {idle.method}, {idle.seconds:.1f} s; of the busy one: "
          f"{busy.method}, {busy.seconds:.1f} s")  # fmt: skip
    print(f"steps --profile: {a_s:.0f} s (seeding included); steps --from: {b_s:.0f} s\n")
    print(
        "| step | entry | A: ratio [95% CI] verdict | B: ratio [95% CI] verdict | "
        "intervals overlap | same verdict |"
    )
    print("|---|---|---|---|---|---|")
    for step in a:
        for entry in ENTRIES:
            x, y = a[step]["entries"].get(entry), b.get(step, {}).get("entries", {}).get(entry)
            if not x or not y:
                continue
            overlap = x["low"] <= y["high"] and y["low"] <= x["high"]
            same = x["verdict"] == y["verdict"]
            marks = ["yes" if ok else "**no**" for ok in (overlap, same)]
            print(f"| {step[:4]} | {entry} | {_cell(x)} | {_cell(y)} | {' | '.join(marks)} |")
    print("\n| step | A passed / reversible / blocked | B passed / reversible / blocked |")
    print("|---|---|---|")
    for step in a:
        print(f"| {step[:4]} | {_state(a[step])} | {_state(b.get(step, {}))} |")


def _cell(judged: dict[str, Any]) -> str:
    return (f"{judged['ratio']:.2f} [{judged['low']:.2f}, {judged['high']:.2f}] "
            f"{judged['verdict']}")  # fmt: skip


def _state(found: dict[str, Any]) -> str:
    if not found:
        return "-"
    blocked = found["blocked"] or {}
    waits = ", ".join(f"{k} {(v or 0) / 1000:.2f} s" for k, v in blocked.items())
    return f"{found['passed']} / {found['reversible']} / {waits}"


if __name__ == "__main__":
    main()
