"""Three designs for "computed, never stale" scores (0006), measured against each other.

    python bench/computed_scores.py [--profile medium] [--rounds 30] [--dsn DSN]

On a database seeded and migrated up to 0005, three template copies made the same way get
one design each, applied at rest:

- ``view``: drop the stored columns, compute them on every read (functions + a view);
- ``trigger``: the reference 0006 (a trigger computes them on write, a validated CHECK
  proves them, stale rows corrected in batches);
- ``generated``: drop the stored columns and add them back as STORED generated columns.

Printed per design: how long applying it took, whether it rewrote quiz_attempts (new
relfilenode), course_progress p50/p95 over interleaved rounds (every round runs every
design in a shuffled order, with the same parameters) and its paired ratio against
``trigger`` with a 95% interval, and what the deployed app's INSERT costs there (WAL per
row and the paired time against the 0005 state, or the error it gets).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import numpy as np
import psycopg

from vpbench.analysis.session_verdicts import judge_session_pair
from vpbench.analysis.verdicts import DEFAULT_THRESHOLD, judge_pairs
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.runner import PreparedStatements
from vpbench.measure.writecost import WriteOptions, measure_write_costs
from vpbench.migrations.apply import apply_step
from vpbench.migrations.sources import discover_migrations
from vpbench.reporting.units import human_bytes
from vpbench.server.backup import create_backup, drop_backup
from vpbench.server.maintenance import run_checkpoint, settle
from vpbench.server.target import ServerTarget, connect, resolve_target
from vpbench.workload.sampling import ParameterStream, load_workload_pools
from vpbench.workload.spec import SqlText, load_workloads

DATABASE = "vpbench_bench_scores"
SCORE_FUNCTIONS = """
CREATE FUNCTION public.quiz_attempt_score(questions jsonb, answers jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT count(*)::integer
    FROM jsonb_array_elements(answers) AS a(answer)
    JOIN jsonb_array_elements(questions) AS q(question)
        ON q.question ->> 'id' = a.answer ->> 'question_id'
    WHERE a.answer -> 'choice' = q.question -> 'correct'
$$;
CREATE FUNCTION public.quiz_attempt_total(questions jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT jsonb_array_length(questions) $$;
CREATE FUNCTION public.quiz_attempt_percentage(questions jsonb, answers jsonb)
    RETURNS numeric(5, 2) LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT coalesce(round(100.0 * count(*) / nullif(jsonb_array_length(questions), 0), 2), 0.00)
    FROM jsonb_array_elements(answers) AS a(answer)
    JOIN jsonb_array_elements(questions) AS q(question)
        ON q.question ->> 'id' = a.answer ->> 'question_id'
    WHERE a.answer -> 'choice' = q.question -> 'correct'
$$;
"""
DESIGN_SQL = {
    "view": SCORE_FUNCTIONS
    + "ALTER TABLE quiz_attempts DROP COLUMN score, DROP COLUMN total, DROP COLUMN percentage;",
    "generated": SCORE_FUNCTIONS
    + """
ALTER TABLE quiz_attempts DROP COLUMN score, DROP COLUMN total, DROP COLUMN percentage,
    ADD COLUMN score integer
        GENERATED ALWAYS AS (public.quiz_attempt_score(questions_json, answers_json)) STORED,
    ADD COLUMN total integer GENERATED ALWAYS AS (public.quiz_attempt_total(questions_json)) STORED,
    ADD COLUMN percentage numeric(5, 2)
        GENERATED ALWAYS AS (public.quiz_attempt_percentage(questions_json, answers_json)) STORED;
CREATE INDEX quiz_attempts_user_course_idx ON quiz_attempts (user_id, course_id, video_id)
    INCLUDE (percentage);
""",
}
PROGRESS = """
WITH course AS (SELECT course_id FROM videos WHERE id = :video_id), best AS (
    SELECT q.video_id, max({percentage}) AS best_percentage
    FROM quiz_attempts q
    WHERE q.user_id = :user_id AND q.course_id = (SELECT course_id FROM course)
    GROUP BY q.video_id
)
SELECT (SELECT count(*) FROM videos v WHERE v.course_id = (SELECT course_id FROM course)),
       count(*) FILTER (WHERE best_percentage >= 70), round(avg(best_percentage), 2)
FROM best
"""


def _sql(design: str) -> SqlText:
    computed = "public.quiz_attempt_percentage(q.questions_json, q.answers_json)"
    text = PROGRESS.format(percentage=computed if design == "view" else "q.percentage")
    runnable = text.replace(":video_id", "%(video_id)s").replace(":user_id", "%(user_id)s")
    positional = text.replace(":video_id", "$1").replace(":user_id", "$2")
    return SqlText(text, runnable, ("video_id", "user_id"), positional)


def _filenode(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_relation_filenode('quiz_attempts')").fetchone()
    return int(row[0]) if row else 0


def _apply(target: ServerTarget, database: str, design: str) -> tuple[float, bool]:
    with connect(target, database, autocommit=True) as conn:
        node = _filenode(conn)
        began = time.perf_counter()
        if design == "trigger":
            (scores,) = [m for m in discover_migrations() if m.id == "0006_computed_scores"]
            apply_step(conn, scores, "up")
        else:
            with conn.transaction():
                conn.execute(DESIGN_SQL[design].encode())
        seconds = time.perf_counter() - began
        rewrote = _filenode(conn) != node
        settle(conn)
    return seconds, rewrote


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="medium")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)
    target = resolve_target(args.dsn)
    seed_database(target, DATABASE, get_profile(args.profile), seed=1, force=True)
    migrations = discover_migrations()
    with connect(target, DATABASE, autocommit=True) as conn:
        for migration in migrations[:5]:
            apply_step(conn, migration, "up")
        settle(conn)
        (page, _) = load_workloads(default_workload_paths(), [m.id for m in migrations])
        pools = load_workload_pools(conn, [page])["video_page"]
    base = create_backup(target, DATABASE, "0005")
    copies = {d: create_backup(target, DATABASE, d) for d in ("view", "trigger", "generated")}
    try:
        applied = {d: _apply(target, c.name, d) for d, c in copies.items()}
        with connect(target, autocommit=True) as conn:
            run_checkpoint(conn)
        samples = _time_progress(target, {d: c.name for d, c in copies.items()}, pools, args)
        writes = {
            d: measure_write_costs(
                target.for_database(base.name), target.for_database(c.name), WriteOptions()
            )
            for d, c in copies.items()
        }
    finally:
        for copy in (base, *copies.values()):
            drop_backup(target, copy)
    print(f"profile {args.profile}, {args.rounds} interleaved rounds, server "
          f"{target.describe(DATABASE)} ({target.source})")  # fmt: skip
    print("| design | applied in | rewrote quiz_attempts | course_progress p50 / p95 | "
          "vs trigger (paired) | quiz_attempts INSERT vs 0005 |")  # fmt: skip
    print("|---|---:|---|---:|---|---|")
    for design in copies:
        ms = np.asarray(samples[design]) / 1e6
        rounds = np.repeat(np.arange(args.rounds), len(ms) // args.rounds)
        judged = judge_pairs(np.asarray(samples["trigger"]) / 1e6, ms, clusters=rounds,
                             threshold=DEFAULT_THRESHOLD, resamples=1000)  # fmt: skip
        estimate = judged.estimate
        (quiz,) = [w for w in writes[design] if w.table == "quiz_attempts"]
        if quiz.error or not (quiz.before and quiz.after):
            insert = f"fails: {quiz.error}"
        else:
            timing = judge_session_pair(quiz.before_ns, quiz.after_ns, quiz.rounds).estimate
            insert = (f"WAL {human_bytes(quiz.before.wal_bytes)} → "
                      f"{human_bytes(quiz.after.wal_bytes)}/row, time {timing.ratio:.2f}x "
                      f"[{timing.low:.2f}, {timing.high:.2f}]")  # fmt: skip
        seconds, rewrote = applied[design]
        ratio = f"{estimate.ratio:.2f}x [{estimate.low:.2f}, {estimate.high:.2f}]"
        print(f"| {design} | {seconds:.1f} s | {'yes' if rewrote else 'no'} | "
              f"{np.percentile(ms, 50):.2f} / {np.percentile(ms, 95):.2f} ms | "
              f"{ratio} | {insert} |")  # fmt: skip


def _time_progress(
    target: ServerTarget, databases: dict[str, str], pools: Any, args: argparse.Namespace
) -> dict[str, list[int]]:
    """Every round: the same 20 parameter draws on every design, designs in shuffled order,
    one fresh session each, two warm-up executions first."""
    rng = random.Random(1)
    stream = ParameterStream(pools, {"video_id", "user_id"}, 1, "computed_scores")
    samples: dict[str, list[int]] = {d: [] for d in databases}
    for _ in range(args.rounds):
        draws = [stream.draw() for _ in range(20)]
        order = list(databases)
        rng.shuffle(order)
        for design in order:
            statements, sql_text = PreparedStatements(), _sql(design)
            with connect(target, databases[design], autocommit=True) as conn:
                for params in draws[:2]:
                    statements.execute(conn, sql_text, params)
                for params in draws:
                    began = time.perf_counter_ns()
                    statements.execute(conn, sql_text, params)
                    samples[design].append(time.perf_counter_ns() - began)
    return samples


if __name__ == "__main__":
    main()
