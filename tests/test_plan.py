"""Plan summaries and fingerprints, on real plans from a real 50k-row table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from conftest import DatabaseFactory
from vpbench.measure.plan import (
    PlanSummary,
    SeqScan,
    describe_node,
    plan_fingerprint,
    summarise_plan,
)

Conn = psycopg.Connection[tuple[Any, ...]]
Explain = list[dict[str, Any]]

TABLE_ROWS = 50_000
BY_SCORE = "SELECT id FROM quiz_attempts WHERE score = %s"
# video_id and course_id are equal on every row; the planner multiplies their selectivities.
CORRELATED = "SELECT id FROM quiz_attempts WHERE video_id = %s AND course_id = %s"
BIG_SORT = "SELECT count(*) FROM (SELECT note FROM quiz_attempts ORDER BY note OFFSET 0) AS s"
WITH_INITPLAN = (
    "SELECT id FROM quiz_attempts"
    " WHERE score > (SELECT max(score) - %s FROM quiz_attempts WHERE video_id = %s)"
)


@pytest.fixture(scope="module")
def plan_db(create_database: DatabaseFactory) -> str:
    conninfo = create_database("plan")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE quiz_attempts AS"
            " SELECT i AS id, i %% 100 AS video_id, i %% 100 AS course_id,"
            " (i * 7919) %% 1000 AS score, md5(i::text) AS note"
            " FROM generate_series(1, %s) AS i",
            [TABLE_ROWS],
        )
        conn.execute("ANALYZE quiz_attempts")
    return conninfo


@pytest.fixture
def conn(plan_db: str) -> Iterator[Conn]:
    """A connection whose changes (indexes, settings) are rolled back after the test."""
    connection = psycopg.connect(plan_db)
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


def explain(
    conn: Conn, query: str, params: list[Any] | None = None, *, analyze: bool = True
) -> Explain:
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    row = conn.execute(f"EXPLAIN ({options}) {query}", params).fetchone()
    assert row is not None
    document: Explain = row[0]
    return document


def conditions(document: Explain) -> list[str]:
    """Every filter and index condition in the plan: where the parameter values show up."""
    found: list[str] = []
    stack = [document[0]["Plan"]]
    while stack:
        node = stack.pop()
        found += [str(v) for k, v in node.items() if k.endswith(("Filter", "Cond"))]
        stack += node.get("Plans", [])
    return found


def test_seq_scan_over_a_big_table_is_reported_with_rows_scanned(conn: Conn) -> None:
    document = explain(conn, BY_SCORE, [3])
    summary = summarise_plan(document)
    assert summary.node_types == {"Seq Scan": 1}
    assert summary.seq_scans == (SeqScan("quiz_attempts", summary.seq_scans[0].rows_scanned),)
    assert summary.seq_scans[0].rows_scanned == pytest.approx(TABLE_ROWS, rel=0.01)
    assert summary.indexes_used == ()
    assert summarise_plan(document, big_table_rows=TABLE_ROWS * 2).seq_scans == ()


def test_buffers_and_times_come_from_the_document(conn: Conn) -> None:
    document = explain(conn, BY_SCORE, [3])
    summary = summarise_plan(document)
    row = conn.execute("SELECT relpages FROM pg_class WHERE relname = 'quiz_attempts'").fetchone()
    assert row is not None
    root = document[0]["Plan"]
    assert summary.shared_hit_blocks == root["Shared Hit Blocks"]
    assert summary.shared_read_blocks == root["Shared Read Blocks"]
    # A seq scan touches every page of the table once.
    assert summary.shared_hit_blocks + summary.shared_read_blocks >= row[0] > 0
    assert summary.temp_written_blocks == 0
    assert summary.planning_ms == document[0]["Planning Time"]
    assert summary.execution_ms == document[0]["Execution Time"]
    assert summary.execution_ms is not None and summary.execution_ms > 0
    assert summarise_plan(document[0]) == summary


def test_an_index_changes_the_plan_and_its_fingerprint_but_values_do_not(conn: Conn) -> None:
    seq_3, seq_700 = explain(conn, BY_SCORE, [3]), explain(conn, BY_SCORE, [700])
    conn.execute("CREATE INDEX quiz_attempts_score_idx ON quiz_attempts (score)")
    conn.execute("ANALYZE quiz_attempts")
    indexed_3, indexed_700 = explain(conn, BY_SCORE, [3]), explain(conn, BY_SCORE, [700])

    before, after = summarise_plan(seq_3), summarise_plan(indexed_3)
    assert after.indexes_used == ("quiz_attempts_score_idx",)
    assert after.seq_scans == ()
    assert after.fingerprint != before.fingerprint
    # The parameter values are in the plans, yet the shapes are the same.
    assert conditions(seq_3) != conditions(seq_700)
    assert conditions(indexed_3) != conditions(indexed_700)
    assert summarise_plan(seq_700).fingerprint == before.fingerprint
    assert summarise_plan(indexed_700).fingerprint == after.fingerprint
    assert len(after.fingerprint) == 16
    int(after.fingerprint, 16)


def test_fingerprint_ignores_values_inside_an_initplan_and_the_actuals(conn: Conn) -> None:
    first = explain(conn, WITH_INITPLAN, [5, 1])
    second = explain(conn, WITH_INITPLAN, [50, 42])
    plain = explain(conn, WITH_INITPLAN, [7, 7], analyze=False)
    assert conditions(first) != conditions(second)
    assert summarise_plan(first).node_types == {"Aggregate": 1, "Seq Scan": 2}
    fingerprints = {plan_fingerprint(d[0]["Plan"]) for d in (first, second, plain)}
    assert fingerprints == {plan_fingerprint(first[0])}
    assert plan_fingerprint(explain(conn, BY_SCORE, [1])[0]) not in fingerprints


def test_correlated_filter_gives_a_bad_estimate_on_the_scan(conn: Conn) -> None:
    estimate = summarise_plan(explain(conn, CORRELATED, [1, 1])).worst_estimate
    assert estimate is not None
    assert estimate.node == "Seq Scan on quiz_attempts"
    assert estimate.actual_rows == TABLE_ROWS / 100
    assert estimate.estimated_rows < TABLE_ROWS / 1000
    assert estimate.factor > 10
    assert estimate.factor == (estimate.actual_rows + 1) / (estimate.estimated_rows + 1)

    good = summarise_plan(explain(conn, BY_SCORE, [3])).worst_estimate
    assert good is not None and good.factor < 2


def test_rows_a_limit_never_asked_for_are_not_an_estimate_error(conn: Conn) -> None:
    limited = summarise_plan(explain(conn, "SELECT id FROM quiz_attempts LIMIT 5"))
    assert limited.worst_estimate is not None and limited.worst_estimate.factor < 2
    # Below a sort the scan runs to the end, so it is judged again.
    query = (
        "SELECT id FROM quiz_attempts WHERE video_id = 1 AND course_id = 1 ORDER BY note LIMIT 5"
    )
    sorted_first = summarise_plan(explain(conn, query)).worst_estimate
    assert sorted_first is not None and sorted_first.node == "Seq Scan on quiz_attempts"
    assert sorted_first.factor > 10


def test_a_sort_spilling_to_disk_is_reported_and_is_the_worst_node(conn: Conn) -> None:
    conn.execute("SET LOCAL work_mem = '64kB'")
    document = explain(conn, BIG_SORT)
    summary = summarise_plan(document)
    assert summary.disk_sorts == ("Sort",)
    assert summary.temp_written_blocks > 0
    assert summary.worst_node is not None
    assert summary.worst_node.node == "Sort"
    assert 0 < summary.worst_node.exclusive_ms < document[0]["Plan"]["Actual Total Time"]

    conn.execute("SET LOCAL work_mem = '256MB'")
    in_memory = summarise_plan(explain(conn, BIG_SORT))
    assert in_memory.disk_sorts == ()
    assert in_memory.temp_written_blocks == 0
    assert in_memory.fingerprint == summary.fingerprint


def test_plain_explain_has_a_shape_but_no_actuals(conn: Conn) -> None:
    summary = summarise_plan(explain(conn, CORRELATED, [1, 1], analyze=False))
    assert summary.node_types == {"Seq Scan": 1}
    assert summary.worst_estimate is None
    assert summary.worst_node is None
    assert summary.seq_scans == ()
    assert summary.planning_ms is None and summary.execution_ms is None
    assert (summary.shared_hit_blocks, summary.shared_read_blocks) == (0, 0)
    assert summary.fingerprint == summarise_plan(explain(conn, CORRELATED, [2, 2])).fingerprint


def test_node_labels_read_like_explain_text(conn: Conn) -> None:
    conn.execute("CREATE INDEX quiz_attempts_id_idx ON quiz_attempts (id)")
    conn.execute("ANALYZE quiz_attempts")

    def root(query: str) -> dict[str, Any]:
        node: dict[str, Any] = explain(conn, query, analyze=False)[0]["Plan"]
        return node

    by_id = root("SELECT note FROM quiz_attempts WHERE id = 7")
    assert describe_node(by_id) == "Index Scan using quiz_attempts_id_idx on quiz_attempts"
    last = root("SELECT note FROM quiz_attempts ORDER BY id DESC LIMIT 1")
    assert describe_node(last) == "Limit"
    assert describe_node(last["Plans"][0]) == (
        "Index Scan Backward using quiz_attempts_id_idx on quiz_attempts"
    )
    grouped = root("SELECT video_id, count(*) FROM quiz_attempts GROUP BY video_id")
    assert describe_node(grouped) == "HashAggregate"
    anti = root(
        "SELECT id FROM quiz_attempts a"
        " WHERE NOT EXISTS (SELECT FROM quiz_attempts b WHERE b.id = a.id + 1)"
    )
    assert describe_node(anti) in {"Hash Anti Join", "Merge Anti Join", "Nested Loop Anti Join"}


@pytest.mark.parametrize("analyze", [True, False])
def test_summary_round_trips_through_json(conn: Conn, analyze: bool) -> None:
    conn.execute("SET LOCAL work_mem = '64kB'")
    summary = summarise_plan(explain(conn, BIG_SORT, analyze=analyze), big_table_rows=1)
    assert summary.seq_scans or not analyze
    text = json.dumps(summary.to_dict())
    assert PlanSummary.from_dict(json.loads(text)) == summary


def test_not_a_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="EXPLAIN"):
        summarise_plan([])
    with pytest.raises(ValueError, match="EXPLAIN"):
        summarise_plan({"QUERY PLAN": "Seq Scan"})
