"""Each state is read once: a table keeps its snapshot while its key (file, columns, rows
written) is unchanged, and is read again as soon as any of them changes."""

from __future__ import annotations

from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.dataset.snapshot import APPLICATION_TABLES, snapshot_tables
from vpbench.server.maintenance import flush_statistics
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.phases import PhaseClock
from vpbench.steps.state import settle_and_read


def test_a_table_is_read_again_exactly_when_its_key_changes(
    target: ServerTarget, session_prefix: str
) -> None:
    name = f"{session_prefix}_state"
    seed_database(target, name, get_profile("tiny"), seed=2)
    clock = PhaseClock()
    with connect(target, name, autocommit=True) as conn:
        first = settle_and_read(conn, clock)
        assert set(first.reread) == set(APPLICATION_TABLES)  # nothing known yet: every table
        conn.execute("CREATE INDEX ON quiz_attempts (user_id)")  # no row written
        same = settle_and_read(conn, clock, first)
        assert same.reread == () and same.snapshot == first.snapshot
        conn.execute("UPDATE videos SET title = title || '!' WHERE position = 1")
        conn.execute("ALTER TABLE users ADD COLUMN nickname text")  # no row written either
        conn.execute("BEGIN")
        conn.execute("UPDATE courses SET id = id")  # rolled back: the count moves all the same
        conn.execute("ROLLBACK")
        flush_statistics(conn)
        changed = settle_and_read(conn, clock, same)
        assert set(changed.reread) == {"videos", "users", "courses"}
        # What was kept is what a full read gives: the key did not hide a change.
        assert changed.snapshot == snapshot_tables(conn, APPLICATION_TABLES)
        assert changed.snapshot["videos"] != first.snapshot["videos"]
        assert changed.snapshot["courses"] == first.snapshot["courses"]  # read, same rows


def test_a_snapshot_does_not_depend_on_where_a_column_sits(
    target: ServerTarget, session_prefix: str
) -> None:
    """A down that adds a dropped column back puts it last: the same values, the same
    checksum; its twin, one value changed, a different one."""
    name = f"{session_prefix}_column_order"
    seed_database(target, name, get_profile("tiny"), seed=2)
    with connect(target, name, autocommit=True) as conn:
        (first,) = snapshot_tables(conn, ("videos",)).values()
        conn.execute("ALTER TABLE videos ADD COLUMN title_again text")
        conn.execute("UPDATE videos SET title_again = title")
        conn.execute("ALTER TABLE videos DROP COLUMN title")
        conn.execute("ALTER TABLE videos RENAME COLUMN title_again TO title")
        conn.execute("ALTER TABLE videos ALTER COLUMN title SET NOT NULL")
        assert conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'videos'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum DESC LIMIT 1"
        ).fetchone() == ("title",)
        (moved,) = snapshot_tables(conn, ("videos",)).values()
        assert moved == first
        conn.execute("UPDATE videos SET title = title || '!' WHERE position = 1")
        (changed,) = snapshot_tables(conn, ("videos",)).values()
        assert changed.rows == first.rows and changed.checksum != first.checksum
