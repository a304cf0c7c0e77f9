"""How often ``vpbench compare`` cries wolf, and how often it catches a real 20% slowdown.

    python bench/detection.py [--profile small] [--sessions 35] [--apart-pairs 35] [--gap 20]

On one seeded database A and its template copy B (identical data):
- A/A interleaved: ``vpbench ab`` sessions of A against itself, every query judged
  (paired session);
- A/A apart: ``vpbench run`` on A twice, ``--gap`` seconds apart, judged as runs collected
  apart (timing alone may only be "inconclusive");
- injected slowdown: B's ``vpbench_delay()`` sleeps 20% of each query's median on A, then
  ``ab`` sessions A vs B; the share of comparisons judged "slower" is the detection rate.
Targets: false positives <= 1% each way (>= 100 comparisons), detection >= 95%.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from vpbench.ab import run_ab
from vpbench.backup import create_backup, drop_backup
from vpbench.comparison import compare_sides, load_sides
from vpbench.databases import database_state
from vpbench.measure import RunOptions
from vpbench.profiles import get_profile
from vpbench.run import run_workloads
from vpbench.seed import seed_database
from vpbench.server import ServerTarget, resolve_target
from vpbench.steps import StepsOptions

DATABASE = "vpbench_bench_detection"
# Three video-page-like queries with fixed parameters from pools, each calling a per-database
# delay function once: a no-op on A; on B it sleeps for the injected slowdown.
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
    """(Re)create vpbench_delay(name): sleeps delays_ms[name] milliseconds (0: returns)."""
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(name), sql.Literal(ms / 1000))
        for name, ms in delays_ms.items()
    )
    cases = sql.SQL("CASE name {} ELSE 0 END").format(whens) if delays_ms else sql.SQL("0")
    body = sql.SQL(
        "CREATE OR REPLACE FUNCTION vpbench_delay(name text) RETURNS int LANGUAGE plpgsql "
        "VOLATILE AS $$ DECLARE seconds float8 := {cases}; BEGIN "
        "IF seconds > 0 THEN PERFORM pg_sleep(seconds); END IF; RETURN 1; END $$"
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--sessions", type=int, default=35)
    parser.add_argument("--apart-pairs", type=int, default=35)
    parser.add_argument("--slow-sessions", type=int, help="ab sessions with the slowdown")
    parser.add_argument("--gap", type=float, default=20.0, help="seconds between apart runs")
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)

    target: ServerTarget = resolve_target(args.dsn)
    if not database_state(target, DATABASE).exists:
        seed_database(target, DATABASE, get_profile(args.profile), seed=1)
    a = target.for_database(DATABASE)
    install_delay(a, {})
    copy = create_backup(target, DATABASE, "bench_b")
    b = target.for_database(copy.name)
    options = StepsOptions(rounds=10, repeat=3, warmup=1, explain=1, seed=1)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        workload = folder / "detection.toml"
        workload.write_text(WORKLOAD)
        try:
            aa_paired: list[str] = []
            for session in range(args.sessions):
                outcome = run_ab(
                    target,
                    DATABASE,
                    DATABASE,
                    [workload],
                    StepsOptions(**{**options.__dict__, "seed": session + 1}),
                    out_dir=folder / "aa",
                )
                aa_paired += verdicts([outcome.path], paired=True)
            print(
                f"A/A interleaved (ab): false positives (slower) {rate(aa_paired, 'slower')}, "
                f"(faster) {rate(aa_paired, 'faster')}"
            )

            aa_apart: list[str] = []
            run_options = RunOptions(warmup=5, repeat=30, explain=3, seed=1)
            previous = run_workloads(
                target, DATABASE, [workload], run_options, out_dir=folder / "apart"
            ).path
            for _ in range(args.apart_pairs):
                time.sleep(args.gap)
                current = run_workloads(
                    target, DATABASE, [workload], run_options, out_dir=folder / "apart"
                ).path
                aa_apart += verdicts([previous, current], paired=False)
                previous = current
            print(
                f"A/A collected {args.gap:.0f}s apart: false positives (slower) "
                f"{rate(aa_apart, 'slower')}, (faster) {rate(aa_apart, 'faster')}"
            )

            medians = {}
            calibration = run_workloads(
                target, DATABASE, [workload], run_options, out_dir=folder / "calibration"
            )
            for entry in calibration.entries:
                assert entry.latency is not None
                medians[entry.name] = entry.latency.p50_ms
            install_delay(b, {name: 0.2 * ms for name, ms in medians.items()})
            print(
                "injected delays (ms): "
                + ", ".join(f"{n} {0.2 * m:.3f} (20% of {m:.3f})" for n, m in medians.items())
            )
            slowed: list[str] = []
            slow_sessions = args.sessions if args.slow_sessions is None else args.slow_sessions
            for session in range(slow_sessions):
                outcome = run_ab(
                    target,
                    DATABASE,
                    copy.name,
                    [workload],
                    StepsOptions(**{**options.__dict__, "seed": 100 + session}),
                    out_dir=folder / "slow",
                )
                slowed += verdicts([outcome.path], paired=True)
            print(
                f"20% slowdown with ab: detected (slower) {rate(slowed, 'slower')}; "
                f"verdicts {dict((v, slowed.count(v)) for v in sorted(set(slowed)))}"
            )
        finally:
            drop_backup(target, copy)


if __name__ == "__main__":
    main()
