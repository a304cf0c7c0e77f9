"""What pg_stat_statements (which the embedded server now loads) adds to a measured query.

    python bench/statement_statistics.py [--profile tiny] [--rounds 20] [--repeat 500] [--dsn DSN]

Sessions on one database alternate, round by round in a balanced order: one tracked by
pg_stat_statements (``track = top``, the default), one not (``track = none``, which needs
a superuser). Each round times ``--repeat`` prepared primary-key lookups of ``videos`` (the
cheapest statement, where a fixed per-statement cost shows most) and the video page's
quiz-attempt query; the figure is the median paired ratio tracked / untracked over rounds,
with its bootstrap interval. A server without the library loaded has nothing to measure.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import psycopg

from vpbench.analysis.verdicts import paired_ratio
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.server.target import resolve_target

DATABASE = "vpbench_bench_statements"
STATEMENTS = {
    "videos primary key": "SELECT id, title FROM videos WHERE id = $1::uuid",
    "quiz attempts of a user and video": (
        "SELECT id, score FROM quiz_attempts WHERE user_id = $1::uuid ORDER BY started_at DESC"
    ),
}


def _session(conninfo: str, tracked: bool) -> psycopg.Connection[Any]:
    conn = psycopg.connect(conninfo, autocommit=True)
    conn.execute(f"SET pg_stat_statements.track = '{'top' if tracked else 'none'}'")
    return conn


def _time(conn: psycopg.Connection[Any], sql: str, keys: list[str]) -> float:
    """Median ns of one prepared execution over ``keys``."""
    pgconn = conn.pgconn
    pgconn.prepare(b"s", sql.encode())
    samples = []
    for key in keys:
        began = time.perf_counter_ns()
        pgconn.exec_prepared(b"s", [key.encode()])
        samples.append(time.perf_counter_ns() - began)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=500)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    target = resolve_target(args.dsn)
    seed_database(target, DATABASE, get_profile(args.profile), seed=1)
    conninfo = target.for_database(DATABASE)
    with psycopg.connect(conninfo) as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        if not preload or "pg_stat_statements" not in str(preload[0]):
            raise SystemExit(f"{target.describe(DATABASE)} does not load pg_stat_statements")
        keys = {
            "videos primary key": [str(r[0]) for r in conn.execute("SELECT id FROM videos")],
            "quiz attempts of a user and video": [
                str(r[0]) for r in conn.execute("SELECT DISTINCT user_id FROM quiz_attempts")
            ],
        }
    rng = np.random.default_rng(1)
    for name, sql in STATEMENTS.items():
        tracked: list[float] = []
        untracked: list[float] = []
        rounds: list[int] = []
        for number in range(args.rounds):
            drawn = [str(k) for k in rng.choice(keys[name], args.repeat)]
            for is_tracked in (True, False) if number % 2 == 0 else (False, True):
                with _session(conninfo, is_tracked) as conn:
                    _time(conn, sql, drawn[:50])  # warm-up: plan, catalog caches
                    (tracked if is_tracked else untracked).append(_time(conn, sql, drawn))
            rounds.append(number)
        found = paired_ratio(untracked, tracked, rounds)
        assert found is not None
        estimate, p_value, _ = found
        print(
            f"{name}: untracked {np.median(untracked) / 1e3:.1f} us, tracked "
            f"{np.median(tracked) / 1e3:.1f} us; tracked / untracked {estimate.ratio:.3f} "
            f"[{estimate.low:.3f}, {estimate.high:.3f}] (p = {p_value:.2f}, {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
