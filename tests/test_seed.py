"""Seeding against real PostgreSQL: schema, volumes, determinism, dirt, safety, atomicity."""

from __future__ import annotations

import psycopg
import pytest

from conftest import DatabaseFactory
from vpbench.dataset.audit import run_audit
from vpbench.dataset.profiles import PROFILES, DirtyRates, get_profile, parse_dirty_rates
from vpbench.dataset.seed import SeedResult, seed_database
from vpbench.dataset.snapshot import snapshot_tables
from vpbench.errors import UnsafeOperationError, UsageError
from vpbench.server.databases import MARK, database_state
from vpbench.server.target import ServerTarget

TINY = get_profile("tiny")


def seed(target: ServerTarget, name: str, **kwargs: object) -> SeedResult:
    return seed_database(target, name, TINY, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def seeded(target: ServerTarget, session_prefix: str) -> tuple[str, SeedResult]:
    """One tiny database with the default dirt, shared by the read-only tests."""
    name = f"{session_prefix}_seeded"
    return name, seed(target, name, seed=7)


def test_profiles_are_ordered_by_size() -> None:
    sizes = [p.quiz_attempts for p in PROFILES.values()]
    assert list(PROFILES) == ["tiny", "small", "medium", "large"]
    assert sizes == sorted(sizes)
    assert PROFILES["small"].quiz_attempts == 100_000
    assert PROFILES["medium"].quiz_attempts == 1_000_000


def test_unknown_profile_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="unknown profile 'huge'; valid profiles: tiny, small"):
        get_profile("huge")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("stale_scores=0.9", "stale_scores must be a fraction between 0 and 0.5"),
        ("stale_scores=lots", "'lots' is not a number"),
        ("stale_scores=nan", "must be a fraction between 0 and 0.5"),
        ("staleness=0.1", "unknown knob 'staleness'; valid knobs: all, orphaned_quiz_attempts"),
        ("stale_scores", "expected KNOB=VALUE"),
    ],
)
def test_bad_dirty_rates_name_the_knob_and_range(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_dirty_rates([spec])


def test_dirty_rate_overrides() -> None:
    rates = parse_dirty_rates(["all=0", "stale-scores=0.25"])
    assert rates.stale_scores == 0.25
    assert rates.orphaned_quiz_attempts == 0.0
    assert parse_dirty_rates([]) == DirtyRates()


def test_seed_creates_the_legacy_schema_and_volumes(
    seeded: tuple[str, SeedResult], target: ServerTarget
) -> None:
    name, result = seeded
    with psycopg.connect(target.for_database(name)) as conn:
        counts = {t: s.rows for t, s in snapshot_tables(conn).items()}
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type "
                "FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            ).fetchall()
        )
        indexes = {
            row[0]
            for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        }
        fks = conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
        ).fetchall()
        analyzed = conn.execute(
            "SELECT count(DISTINCT tablename) FROM pg_stats WHERE schemaname = 'public'"
        ).fetchone()
        ledger = conn.execute("SELECT profile, seed, row_counts FROM vpbench.seed_info").fetchall()
    assert counts == {
        "users": TINY.users,
        "courses": TINY.courses,
        "videos": TINY.videos,
        "quiz_attempts": TINY.quiz_attempts,
        "reflections": TINY.reflections,
    }
    assert {load.table: load.rows for load in result.tables} == counts
    assert types["quiz_attempts.video_id"] == "text"
    assert types["quiz_attempts.questions"] == "text"
    assert types["quiz_attempts.percentage"] == "numeric"
    assert types["reflections.video_id"] == "uuid"
    # quiz_attempts and reflections carry no index but their primary key; videos are indexed.
    assert "videos_course_id_position_idx" in indexes
    assert {i for i in indexes if i.startswith(("quiz_attempts", "reflections"))} == {
        "quiz_attempts_pkey",
        "reflections_pkey",
    }
    assert fks == [("videos",)]
    assert analyzed == (5,)
    assert ledger == [("tiny", 7, counts)]
    assert database_state(target, name).marked


def test_seeded_dirt_matches_what_the_audit_finds(
    seeded: tuple[str, SeedResult], target: ServerTarget
) -> None:
    name, result = seeded
    dirt = result.dirty_counts
    with psycopg.connect(target.for_database(name)) as conn:
        report = run_audit(conn)
        voice_memos = conn.execute(
            "SELECT count(*) FROM reflections WHERE kind = 'voice'"
        ).fetchone()
    assert voice_memos is not None
    assert 0.15 < voice_memos[0] / TINY.reflections < 0.25
    assert all(dirt[knob] > 0 for knob in DirtyRates.knobs() if knob != "malformed_voice_metadata")
    assert report.check("orphaned_quiz_attempts").violations == dirt["orphaned_quiz_attempts"]
    assert report.check("stale_stored_scores").violations == dirt["stale_scores"]
    assert report.check("reflection_null_links").violations == (
        dirt["null_reflection_course"] + dirt["null_reflection_video"]
    )
    assert (
        report.check("reflection_dangling_links").violations == (dirt["dangling_reflection_links"])
    )
    assert report.check("malformed_voice_metadata").violations == (dirt["malformed_voice_metadata"])
    # Each voice memo is counted once: parseable (metadata in text) or malformed.
    assert report.check("voice_memo_metadata_in_text").violations == (
        voice_memos[0] - dirt["malformed_voice_metadata"]
    )
    assert report.check("missing_foreign_keys").violations == 6


def test_clean_seed_has_no_data_violations(target: ServerTarget, session_prefix: str) -> None:
    name = f"{session_prefix}_clean"
    result = seed(target, name, seed=3, dirty=DirtyRates.clean())
    assert set(result.dirty_counts.values()) == {0}
    with psycopg.connect(target.for_database(name)) as conn:
        report = run_audit(conn)
    for check in (
        "orphaned_quiz_attempts",
        "reflection_null_links",
        "reflection_dangling_links",
        "stale_stored_scores",
        "malformed_voice_metadata",
    ):
        assert report.check(check).violations == 0, check


def test_same_seed_gives_identical_data_and_another_seed_does_not(
    seeded: tuple[str, SeedResult], target: ServerTarget, session_prefix: str
) -> None:
    name, _ = seeded
    again, other = f"{session_prefix}_same", f"{session_prefix}_other"
    seed(target, again, seed=7)
    seed(target, other, seed=8)
    snapshots = {}
    for db in (name, again, other):
        with psycopg.connect(target.for_database(db)) as conn:
            snapshots[db] = snapshot_tables(conn)
    assert snapshots[name] == snapshots[again]
    assert all(snapshots[name][t].checksum != snapshots[other][t].checksum for t in snapshots[name])


def test_seeding_an_unmarked_non_empty_database_needs_force(
    target: ServerTarget, create_database: DatabaseFactory
) -> None:
    conninfo = create_database("foreign")
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    assert isinstance(name, str)
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE payroll (id int)")
        conn.execute("INSERT INTO payroll VALUES (1)")
    with pytest.raises(UnsafeOperationError, match="not created by vpbench and holds 1 table"):
        seed(target, name)
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM payroll").fetchone() == (1,)
    seed(target, name, force=True)
    assert database_state(target, name).marked
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT to_regclass('payroll')").fetchone() == (None,)
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert comment is not None and comment[0].startswith(MARK)


def test_interrupted_reseed_leaves_the_previous_data(
    target: ServerTarget, session_prefix: str
) -> None:
    name = f"{session_prefix}_interrupted"
    seed(target, name, seed=1)
    with psycopg.connect(target.for_database(name)) as conn:
        before = snapshot_tables(conn)

    def interrupt(table: str, done: int, total: int) -> None:
        if table == "quiz_attempts" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seed(target, name, seed=2, progress=interrupt)
    with psycopg.connect(target.for_database(name)) as conn:
        assert snapshot_tables(conn) == before
        assert conn.execute("SELECT seed FROM vpbench.seed_info").fetchall() == [(1,)]


def test_reseeding_drops_what_migrations_left(target: ServerTarget, session_prefix: str) -> None:
    name = f"{session_prefix}_reseed"
    seed(target, name, seed=1)
    with psycopg.connect(target.for_database(name)) as conn:
        conn.execute("CREATE SCHEMA quarantine")
        conn.execute("CREATE TABLE quarantine.quiz_attempts (id uuid)")
    seed(target, name, seed=1)
    with psycopg.connect(target.for_database(name)) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert "quarantine" not in schemas and {"public", "vpbench"} <= schemas
