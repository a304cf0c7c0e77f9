"""Write cost on a real database: WAL per row is the row's own WAL, without the full-page
images that the first writes after a checkpoint pay wherever they land."""

from __future__ import annotations

import psycopg
import pytest

from conftest import DatabaseFactory
from vpbench.measure import writecost
from vpbench.measure.writecost import WriteOptions, measure_write_costs

OPTIONS = WriteOptions(rounds=2, repeat=1)


@pytest.fixture(scope="module")
def aged(create_database: DatabaseFactory) -> str:
    """A child table with a foreign key whose pages have free space scattered over them (a
    tenth of the rows deleted and vacuumed), just after a checkpoint: where an insert lands
    is up to the free space map, and most pages have not been written since the checkpoint."""
    conninfo = create_database("writecost_aged")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY)")
        conn.execute("INSERT INTO parent SELECT generate_series(1, 100)")
        conn.execute(
            "CREATE TABLE probe (id uuid PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, "
            "pad text NOT NULL) WITH (autovacuum_enabled = off)"
        )
        conn.execute(
            "INSERT INTO probe SELECT gen_random_uuid(), 1 + g % 100, repeat('x', 300) "
            "FROM generate_series(1, 20000) g"
        )
        conn.execute("DELETE FROM probe WHERE random() < 0.1")
        conn.execute("VACUUM ANALYZE probe")
    return conninfo


def _wal_per_row(conninfo: str) -> tuple[float, int, int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    (cost,) = measure_write_costs(conninfo, conninfo, OPTIONS, tables=["probe"])
    assert cost.before is not None, cost.error
    return cost.before.wal_bytes, cost.before.clean_rows, cost.before.rows


@pytest.mark.dsn_server  # before PostgreSQL 18 the WAL is read server-wide
def test_wal_per_row_leaves_out_full_page_images(aged: str) -> None:
    wal, clean, rows = _wal_per_row(aged)
    assert clean == rows
    # A heap tuple of ~330 bytes, a primary-key entry and the parent row's lock: well below
    # one full-page image (8 kB).
    assert 300 < wal < 2000


@pytest.mark.slow
def test_one_reading_per_row_would_count_full_page_images(
    aged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin: with one reading per row, some rows' figures carry a full-page image, and
    how many depends on when the last checkpoint ran."""
    monkeypatch.setattr(writecost, "WAL_READINGS", 1)
    _, clean, rows = _wal_per_row(aged)
    assert clean < rows
