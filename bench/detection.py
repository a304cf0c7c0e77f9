"""How often ``vpbench compare`` cries wolf, and how often it catches a real 10% slowdown.

    python bench/detection.py [--profile small] [--sessions 35] [--apart-pairs 35] [--gap 20]
                              [--copies-only]

On one seeded (and so settled) database A and two template copies of it, C and D, made the
same way (as ``steps`` makes the two states it compares):
- A/A copies: ``ab`` sessions of C against D, both fresh (target: median paired ratio
  within 1%);
- original vs copy: ``ab`` sessions of A against C, for information: a fresh file copy
  scans a big table faster than its source, whose file the page cache holds differently
  (same pages, same plans, same buffers), which is why ``steps`` never measures the original;
- injected slowdown: D's ``vpbench_delay()`` spins (busy-waits, microsecond resolution;
  ``pg_sleep`` cannot sleep less than a millisecond) for the delay that, added to the A/A
  copies' pairs, moves their median paired ratio by 10% (for a query whose latency is
  bimodal that is more than 10% of its median), then ``ab`` sessions C vs D; the share
  judged "slower" is the detection rate; the delay function runs the same statements on
  both sides, only D's spin lasts longer;
- A/A paired: ``ab`` sessions of C against itself;
- A/A apart: ``vpbench run`` on C twice, ``--gap`` seconds apart, judged as runs collected
  apart (timing alone may only give "inconclusive").
The copies are made as ``steps`` makes them (clones on PostgreSQL 18 where the filesystem
shares blocks, file copies elsewhere); the first line says which. ``--copies-only`` stops
after the A/A copies.
Targets (default threshold median:5%): false positives <= 1% each way over >= 100
comparisons, detection >= 95%. Every line printed has its baseline from the same run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from vpbench.analysis.comparison import compare_sides, load_sides
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.ab import run_ab
from vpbench.measure.interleave import PairedOptions
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.server.backup import create_backup, drop_backup
from vpbench.server.databases import database_state
from vpbench.server.maintenance import run_checkpoint
from vpbench.server.target import ServerTarget, connect, resolve_target
from vpbench.steps.copies import describe_copy

DATABASE = "vpbench_bench_detection"
Pairs = tuple[list[float], list[float]]
SLOWDOWN = 0.10
# Three video-page-like queries with parameters from pools, each calling a per-database
# delay function once: a no-op on A and C; on B it spins for the injected slowdown.
WORKLOAD = """\
[params.viewer]
source = '''
SELECT user_id::text AS user_id, video_id::text AS video_id FROM quiz_attempts
GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 20
'''
provides = ["user_id", "video_id"]

[queries.attempts]
sql = '''
SELECT q.id, q.score, q.completed_at FROM quiz_attempts q, vpbench_delay('attempts') d
WHERE q.user_id = :user_id AND q.video_id = :video_id ORDER BY q.completed_at DESC LIMIT 20
'''

[queries.reflections]
sql = '''
SELECT r.id, r.kind, r.created_at FROM reflections r, vpbench_delay('reflections') d
WHERE r.user_id = :user_id ORDER BY r.created_at DESC LIMIT 50
'''

[queries.header]
sql = '''
SELECT v.id, v.title, c.title FROM videos v JOIN courses c ON c.id = v.course_id,
       vpbench_delay('header') d
WHERE v.id = :video_id
'''
"""


def install_delay(conninfo: str, delays_ms: dict[str, float]) -> None:
    """(Re)create vpbench_delay(name): spins for delays_ms[name] milliseconds (0: returns)."""
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(name), sql.Literal(ms))
        for name, ms in delays_ms.items()
    )
    cases = sql.SQL("CASE name {} ELSE 0 END").format(whens) if delays_ms else sql.SQL("0")
    body = sql.SQL(
        "CREATE OR REPLACE FUNCTION vpbench_delay(name text) RETURNS int LANGUAGE plpgsql "
        "VOLATILE AS $$ DECLARE ms float8 := {cases}; "
        "stop timestamptz := clock_timestamp() + ms * interval '1 millisecond'; BEGIN "
        "WHILE clock_timestamp() < stop LOOP END LOOP; RETURN 1; END $$"
    ).format(cases=cases)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(body)


def verdicts(path_or_pair: list[Path], paired: bool) -> list[str]:
    """``query:verdict`` for every entry the two sides share."""
    base, new, is_paired = load_sides(path_or_pair)
    comparison = compare_sides(base, new, paired_session=paired and is_paired)
    return [f"{row.name}:{row.judgement.verdict}" for row in comparison.rows]


def rate(found: list[str], verdict: str) -> str:
    hits = [v.split(":")[0] for v in found if v.endswith(f":{verdict}")]
    if not found:
        return "n/a"
    where = f" ({', '.join(sorted(hits))})" if hits else ""
    return f"{len(hits)}/{len(found)} = {len(hits) / len(found):.1%}{where}"


def sessions(
    target: ServerTarget,
    a: str,
    b: str,
    workload: Path,
    options: PairedOptions,
    count: int,
    folder: Path,
    first_seed: int,
) -> tuple[list[str], dict[str, list[float]], float, dict[str, Pairs]]:
    """``count`` ab sessions: verdicts, paired ratios per query, seconds per session and
    every pair of samples per query (ms)."""
    found: list[str] = []
    ratios: dict[str, list[float]] = {}
    pairs: dict[str, Pairs] = {}
    began = time.perf_counter()
    for session in range(count):
        outcome = run_ab(
            target, a, b, [workload], replace(options, seed=first_seed + session), out_dir=folder
        )
        found += verdicts([outcome.path], paired=True)
        base, new, _ = load_sides([outcome.path])
        for row in compare_sides(base, new, paired_session=True).rows:
            ratios.setdefault(row.name, []).append(row.judgement.estimate.ratio)
            old, cur = pairs.setdefault(row.name, ([], []))
            old += [ns / 1e6 for ns in base.entries[row.name].samples_ns]
            cur += [ns / 1e6 for ns in new.entries[row.name].samples_ns]
    return found, ratios, (time.perf_counter() - began) / max(count, 1), pairs


def delay_for(pairs: Pairs, slowdown: float) -> float:
    """The delay (ms) that, added to every "after" sample of these A/A pairs, moves their
    median paired ratio by ``slowdown``: what the paired judgement will see as that
    slowdown (10% of the median is less than 10% of a pair when latencies are bimodal)."""
    base, new = np.asarray(pairs[0]), np.asarray(pairs[1])
    start = float(np.median(np.log(new / base)))
    low, high = 0.0, float(np.median(base))
    for _ in range(40):
        middle = (low + high) / 2
        moved = float(np.median(np.log((new + middle) / base))) - start
        low, high = (middle, high) if moved < math.log1p(slowdown) else (low, middle)
    return (low + high) / 2


def _medians(ratios: dict[str, list[float]]) -> str:
    return ", ".join(f"{n} {statistics.median(r):.3f}" for n, r in ratios.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--sessions", type=int, default=35)
    parser.add_argument("--apart-pairs", type=int, default=35)
    parser.add_argument("--gap", type=float, default=20.0, help="seconds between apart runs")
    parser.add_argument("--dsn")
    parser.add_argument("--copies-only", action="store_true", help="only the A/A copies")
    args = parser.parse_args(argv)

    target: ServerTarget = resolve_target(args.dsn)
    if not database_state(target, DATABASE).exists:
        seed_database(target, DATABASE, get_profile(args.profile), seed=1)
    install_delay(target.for_database(DATABASE), {})
    control = create_backup(target, DATABASE, "bench_c")
    slowed = create_backup(target, DATABASE, "bench_d")
    with connect(target, autocommit=True) as conn:
        run_checkpoint(conn)
    c, d = control.name, slowed.name
    options = PairedOptions(explain=1)
    print(f"server {target.describe(DATABASE)} ({target.source}); paired options {options}")
    print(f"copies C and D: {describe_copy(control)}; {describe_copy(slowed)}")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        workload = folder / "detection.toml"
        workload.write_text(WORKLOAD)
        try:
            found, ratios, seconds, side_c = sessions(
                target, c, d, workload, options, args.sessions, folder / "cd", 1
            )
            print(
                f"A/A copies (C vs D, copies made the same way, {seconds:.1f}s per session): "
                f"(slower) {rate(found, 'slower')}, (faster) {rate(found, 'faster')}; median "
                f"paired ratio per query {_medians(ratios)} (target: within 1% of 1)"
            )
            if args.copies_only:
                return
            # Each delay is calibrated on the A/A copies' pairs above (they come first,
            # while neither copy has been used more than the other).
            delays = {name: delay_for(pairs, SLOWDOWN) for name, pairs in side_c.items()}
            install_delay(target.for_database(d), delays)
            shown = [
                f"{n} {delays[n]:.4f} (median {statistics.median(side_c[n][0]):.3f})"
                for n in delays
            ]
            print(f"injected delays for a {SLOWDOWN:.0%} paired slowdown (ms): " + ", ".join(shown))
            found, ratios, seconds, _ = sessions(
                target, c, d, workload, options, args.sessions, folder / "slow", 100
            )
            print(
                f"{SLOWDOWN:.0%} slowdown (C vs D, {seconds:.1f}s per session): detected "
                f"(slower) {rate(found, 'slower')}; verdicts "
                f"{dict((v, found.count(v)) for v in sorted(set(found)))}; median paired "
                f"ratio per query {_medians(ratios)}"
            )

            found, ratios, seconds, _ = sessions(
                target, c, c, workload, options, args.sessions, folder / "cc", 1
            )
            print(
                f"A/A paired (C vs C, {seconds:.1f}s per session): false positives (slower) "
                f"{rate(found, 'slower')}, (faster) {rate(found, 'faster')}; median paired "
                f"ratio per query {_medians(ratios)}"
            )

            found, ratios, seconds, _ = sessions(
                target, DATABASE, c, workload, options, max(args.sessions // 3, 2),
                folder / "ac", 1,
            )  # fmt: skip
            print(
                f"original vs copy (A vs C, {seconds:.1f}s per session; for information): "
                f"(slower) {rate(found, 'slower')}, (faster) {rate(found, 'faster')}; median "
                f"paired ratio per query {_medians(ratios)}"
            )

            apart: list[str] = []
            run_options = RunOptions(warmup=5, repeat=30, explain=3, seed=1)
            previous = run_workloads(
                target, c, [workload], run_options, out_dir=folder / "apart"
            ).path
            for _ in range(args.apart_pairs):
                time.sleep(args.gap)
                current = run_workloads(
                    target, c, [workload], run_options, out_dir=folder / "apart"
                ).path
                apart += verdicts([previous, current], paired=False)
                previous = current
            print(
                f"A/A collected {args.gap:.0f}s apart (C): false positives (slower) "
                f"{rate(apart, 'slower')}, (faster) {rate(apart, 'faster')}"
            )
        finally:
            drop_backup(target, control)
            drop_backup(target, slowed)


if __name__ == "__main__":
    main()
