"""Runs collected apart, on a real database: a timing change only counts when a plan or
buffer change confirms it, and VACUUM or ANALYZE between the runs confirms nothing."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import DatabaseFactory
from vpbench.analysis.comparison import compare_sides, load_sides
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.server.target import ServerTarget

WORKLOAD = """\
[params.low]
values = [100, 1000, 2000]

[queries.ranged]
sql = "SELECT count(*) FROM bloated WHERE v BETWEEN :low AND :low + 600"
"""
OPTIONS = RunOptions(warmup=3, repeat=30, explain=3, seed=1)


@pytest.fixture
def bloated(create_database: DatabaseFactory, tmp_path: Path) -> tuple[str, Path]:
    """A table whose every row was just updated (no autovacuum): an index-only scan of it
    visits the heap for each row until VACUUM sets the visibility map again. Rows of a
    kilobyte, seven to a page, so that the rows a query counts lie on as many pages and
    VACUUM makes it several times faster: a gain that a busy machine's drift between two
    runs (up to 1.5x) cannot reverse, where rows of 80 bytes gained only 1.3x."""
    conninfo = create_database(f"apart_{tmp_path.name[-12:]}".lower().replace("-", "_"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bloated (id int PRIMARY KEY, v int, pad text) "
            "WITH (autovacuum_enabled = off)"
        )
        conn.execute(
            "INSERT INTO bloated SELECT g, g % 3000, repeat('x', 1000) "
            "FROM generate_series(1, 30000) g"
        )
        conn.execute("CREATE INDEX bloated_v_idx ON bloated (v)")
        conn.execute("VACUUM ANALYZE bloated")
        conn.execute("UPDATE bloated SET pad = pad || 'y'")
    workload = tmp_path / "ranged.toml"
    workload.write_text(WORKLOAD)
    return str(conninfo_to_dict(conninfo)["dbname"]), workload


def _runs(
    target: ServerTarget, dbname: str, workload: Path, folder: Path, between: str
) -> list[Path]:
    first = run_workloads(target, dbname, [workload], OPTIONS, out_dir=folder / "1").path
    with psycopg.connect(target.for_database(dbname), autocommit=True) as conn:
        conn.execute(between)
    second = run_workloads(target, dbname, [workload], OPTIONS, out_dir=folder / "2").path
    return [first, second]


def test_vacuum_between_runs_is_no_verdict(
    target: ServerTarget, bloated: tuple[str, Path], tmp_path: Path
) -> None:
    dbname, workload = bloated
    base, new, paired = load_sides(_runs(target, dbname, workload, tmp_path, "VACUUM bloated"))
    (row,) = compare_sides(base, new, paired_session=paired).rows
    # Faster, with fewer buffers (VACUUM also changed the plan, through relallvisible): each
    # of those signals alone used to make this "faster".
    assert row.judgement.estimate.high < 0.95
    assert row.base_buffers and row.new_buffers and row.new_buffers < 0.5 * row.base_buffers
    assert row.judgement.verdict == "inconclusive"
    assert "maintenance of public.bloated (VACUUM)" in row.judgement.reason


def test_a_real_change_between_runs_still_gets_its_verdict(
    target: ServerTarget, bloated: tuple[str, Path], tmp_path: Path
) -> None:
    dbname, workload = bloated
    # A narrow range: 40 rows through the index against a scan of the whole bloated table.
    workload.write_text(WORKLOAD.replace(":low + 600", ":low + 3"))
    runs = _runs(target, dbname, workload, tmp_path, "DROP INDEX bloated_v_idx")
    base, new, paired = load_sides(runs)
    comparison = compare_sides(base, new, paired_session=paired)
    (row,) = comparison.rows
    assert comparison.confounder is None
    assert row.plan_changed is True and row.judgement.verdict == "slower", row.judgement.reason
