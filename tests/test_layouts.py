"""Migrations where teams keep them: an alembic project and numbered SQL pairs, read as
vpbench steps, applied and reverted by vpbench's own apply, and refused in one line when
broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import DatabaseFactory
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.dataset.snapshot import schema_shape
from vpbench.migrations.alembic_project import alembic_current
from vpbench.migrations.apply import apply_step
from vpbench.migrations.folder import Migration
from vpbench.migrations.sources import MigrationSource, detect_layout, discover_migrations
from vpbench.server.target import ServerTarget

ALEMBIC = Path(__file__).parent / "data" / "alembic_project"
REVISIONS = ("a1f0c2d3e4b5", "b2e1d3c4f5a6", "c3d2e1f0a9b8")


def as_pairs(migrations: tuple[Migration, ...], folder: Path) -> Path:
    """The same steps as numbered SQL pairs (the SQL alembic rendered), each with a side
    file carrying what the SQL alone does not say."""
    folder.mkdir()
    for number, step in enumerate(migrations, start=1):
        stem = f"{number:04d}_{step.id}"
        (folder / f"{stem}.up.sql").write_text(step.up_sql)
        (folder / f"{stem}.down.sql").write_text(step.down_sql)
        transactional = str(step.transactional).lower()
        (folder / f"{stem}.toml").write_text(
            f'title = "{step.title}"\ntransactional = {transactional}\n'
        )
    return folder


def test_an_alembic_project_is_a_series_of_rendered_steps() -> None:
    assert (
        detect_layout(ALEMBIC) == "alembic" and detect_layout(ALEMBIC / "alembic.ini") == "alembic"
    )
    steps = discover_migrations(ALEMBIC)
    assert tuple(s.id for s in steps) == REVISIONS
    columns, index, foreign_key = steps
    assert (
        columns.title == "Count the words of each reflection"
        and columns.layout == "alembic revision"
    )
    assert columns.transactional and "BEGIN" not in columns.up_sql  # one block: one transaction
    assert "CREATE TABLE alembic_version" in columns.up_sql
    assert columns.down_sql.rstrip().endswith("DROP TABLE alembic_version;")
    # autocommit_block(): the step runs block by block, CONCURRENTLY outside any transaction.
    assert not index.transactional and "CREATE INDEX CONCURRENTLY" in index.up_sql
    assert "NOT VALID" in foreign_key.up_sql and "VALIDATE CONSTRAINT" in foreign_key.up_sql
    assert (
        columns.script_file("up") == ALEMBIC / "versions" / "a1f0c2d3e4b5_reflection_word_count.py"
    )
    # Rendering is deterministic: the checksums that detect edited history are stable.
    assert [s.checksum for s in discover_migrations(ALEMBIC)] == [s.checksum for s in steps]


def test_numbered_pairs_are_steps_in_number_order(tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    for stem, up in (("0002_second", "CREATE INDEX CONCURRENTLY i ON t (x);"),
                     ("0010_third", "SELECT 3;"), ("0001_first", "SELECT 1;")):  # fmt: skip
        (folder / f"{stem}.up.sql").write_text(up)
        (folder / f"{stem}.down.sql").write_text("SELECT 0;")
    (folder / "0010_third.toml").write_text('title = "Third"\nmax_stall = "5s"\ndowntime = "ok"\n')
    assert detect_layout(folder) == "sql"
    first, second, third = discover_migrations(folder)
    assert (first.id, second.id, third.id) == ("0001_first", "0002_second", "0010_third")
    assert first.title == "first" and first.transactional
    assert not second.transactional  # CONCURRENTLY cannot run inside a transaction
    assert third.title == "Third" and third.max_stall_ms == 5000
    assert discover_migrations(MigrationSource(folder, "sql")) == (first, second, third)


def _broken_alembic(tmp_path: Path) -> Path:
    project = tmp_path / "alembic"
    shutil.copytree(ALEMBIC, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vpbench", *args], capture_output=True,
                          text=True, check=False)  # fmt: skip


@pytest.mark.slow
def test_broken_migrations_are_one_line_naming_the_file(
    target: ServerTarget, tmp_path: Path
) -> None:
    alembic_syntax = _broken_alembic(tmp_path / "syntax")
    revision = alembic_syntax / "versions" / "b2e1d3c4f5a6_attempts_by_user.py"
    revision.write_text(
        revision.read_text().replace("def upgrade() -> None:", "def upgrade( -> None:")
    )
    no_downgrade = _broken_alembic(tmp_path / "downgrade")
    revision_2 = no_downgrade / "versions" / "c3d2e1f0a9b8_reflection_users_fk.py"
    text = revision_2.read_text()
    revision_2.write_text(text[: text.index("def downgrade")])
    lonely = tmp_path / "pairs"
    lonely.mkdir()
    (lonely / "0001_a.up.sql").write_text("SELECT 1;")
    (lonely / "0001_a.down.sql").write_text("SELECT 1;")
    (lonely / "0002_b.up.sql").write_text("SELECT 2;")
    bad_side = tmp_path / "side"
    bad_side.mkdir()
    (bad_side / "0001_a.up.sql").write_text("SELECT 1;")
    (bad_side / "0001_a.down.sql").write_text("SELECT 1;")
    (bad_side / "0001_a.toml").write_text('titel = "typo"\n')
    cases = [
        (alembic_syntax, f"{revision}:15: Python syntax error"),
        (no_downgrade, f"{revision_2}: revision c3d2e1f0a9b8 has no downgrade()"),
        (lonely, f"{lonely / '0002_b.up.sql'}: 0002_b.up.sql has no 0002_b.down.sql beside it"),
        (bad_side, f"{bad_side / '0001_a.toml'}: unknown key 'titel'"),
    ]
    for path, expected in cases:
        done = _cli("migrate", "status", "--migrations", str(path), "--dsn", target.conninfo)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"vpbench: error: {expected}"), lines[0]
    named = _cli("migrate", "status", "--migrations", str(lonely), "--migrations-layout",
                 "alembic", "--dsn", target.conninfo)  # fmt: skip
    assert named.returncode == 2 and "no alembic.ini: not an alembic project" in named.stderr


def test_alembic_steps_apply_revert_and_keep_alembic_version_in_step(
    target: ServerTarget, session_prefix: str
) -> None:
    name = f"{session_prefix}_alembic"
    seed_database(target, name, get_profile("tiny"), seed=6)
    steps = discover_migrations(ALEMBIC)
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        shape = schema_shape(conn)
        applied = [apply_step(conn, step, "up") for step in steps]
        assert alembic_current(conn) == (REVISIONS[-1],)
        index = applied[1].statements
        created = next(run for run in index if "CONCURRENTLY" in run.text)
        assert created.locks == ()  # CONCURRENTLY: nothing held after it, no rewrite
        added = next(run for run in applied[0].statements if "ADD COLUMN" in run.text)
        assert "AccessExclusiveLock on reflections" in added.locks  # held to the commit
        assert applied[0].lock_holds[-1].until_s == pytest.approx(applied[0].seconds)
        assert _constraint_valid(conn, "reflections_user_id_fkey")
        for step in reversed(steps):
            apply_step(conn, step, "down")
        assert alembic_current(conn) == () and schema_shape(conn) == shape


def _constraint_valid(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", [name])
    return bool(row.fetchone() == (True,))


@pytest.mark.slow
def test_migrate_up_adopts_alembic_history_and_guards_the_reference_series(
    target: ServerTarget, session_prefix: str, create_database: DatabaseFactory, tmp_path: Path
) -> None:
    """A database alembic already migrated to its first revision (no vpbench ledger) gets
    the rest; the reference series is refused on a database vpbench did not create."""
    conninfo = create_database("alembic_team")
    seeded = f"{session_prefix}_alembic_src"
    seed_database(target, seeded, get_profile("tiny"), seed=7)
    from vpbench.server.backup import restore_dump, run_client

    dump = tmp_path / "team.dump"
    run_client("pg_dump", ["--format=custom", f"--file={dump}"], target.for_database(seeded))
    restore_dump(dump, conninfo)
    first = discover_migrations(ALEMBIC)[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        apply_step(conn, first, "up")
        conn.execute("DROP SCHEMA vpbench CASCADE")  # as if alembic itself had applied it
    refused = _cli("migrate", "up", "--dsn", conninfo)
    assert refused.returncode == 2 and "reference migrations" in refused.stderr, refused.stderr
    done = _cli("migrate", "up", "--dsn", conninfo, "--migrations", str(ALEMBIC))
    assert done.returncode == 0, done.stderr
    assert f"alembic_version says {REVISIONS[0]} is applied" in done.stdout
    assert f"up {REVISIONS[1]}" in done.stdout and f"up {REVISIONS[0]} " not in done.stdout
    with psycopg.connect(conninfo) as conn:
        assert alembic_current(conn) == (REVISIONS[-1],)
    # The twin of the refusal: on a plain restore of the same dump, --force applies it.
    plain = create_database("alembic_plain")
    restore_dump(dump, plain)
    assert _cli("migrate", "up", "0001_quiz_attempt_links", "--dsn", plain).returncode == 2
    forced = _cli("migrate", "up", "0001_quiz_attempt_links", "--dsn", plain, "--force")
    assert forced.returncode == 0 and "up 0001_quiz_attempt_links" in forced.stdout, forced.stderr


ONLINE_REVISION = Path(__file__).parent / "data" / "alembic_online" / "d4e3f2a1b0c9_course_count.py"


def with_online_revision(folder: Path) -> Path:
    """The test project plus a fourth revision that reads the database as it runs."""
    project = folder / "alembic"
    shutil.copytree(ALEMBIC, project, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ONLINE_REVISION, project / "versions" / ONLINE_REVISION.name)
    return project


def test_a_revision_that_reads_the_database_runs_online_on_vpbenchs_connection(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    steps = discover_migrations(with_online_revision(tmp_path))
    *rendered, online = steps
    assert not any(s.online for s in rendered)
    assert online.online.startswith("its code cannot be rendered as SQL offline (upgrade()")
    name = f"{session_prefix}_alembic_online"
    seed_database(target, name, get_profile("tiny"), seed=6)
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        for step in steps:
            apply_step(conn, step, "up")
        assert alembic_current(conn) == (online.id,) and conn.autocommit
        comment = conn.execute("SELECT obj_description('courses'::regclass)").fetchone()
        assert comment == ("had 6 courses",)
        apply_step(conn, online, "down")
        assert alembic_current(conn) == (REVISIONS[-1],)
        assert conn.execute("SELECT obj_description('courses'::regclass)").fetchone() == (None,)
        ledger = conn.execute("SELECT id FROM vpbench.migrations ORDER BY applied_at").fetchall()
        assert [row[0] for row in ledger] == list(REVISIONS)


def test_an_empty_up_and_an_unknown_target_are_refused_before_anything_runs(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    """An empty up.sql was applied as a step that does nothing; steps --to an unknown
    migration seeded the database before it refused."""
    folder = tmp_path / "migrations"
    (folder / "0001_nothing").mkdir(parents=True)
    (folder / "0001_nothing" / "up.sql").write_text("-- to do\n")
    (folder / "0001_nothing" / "down.sql").write_text("SELECT 1;\n")
    (folder / "0001_nothing" / "migration.toml").write_text('title = "nothing"\n')
    empty = _cli("migrate", "status", "--migrations", str(folder), "--dsn", target.conninfo)
    assert empty.returncode == 2 and "has no statement in up.sql" in empty.stderr
    working = f"{session_prefix}_unknown_to"
    unknown = _cli("steps", "--profile", "tiny", "--db", working, "--to", "0009_nope",
                   "--out", str(tmp_path / "out"), "--dsn", target.conninfo)  # fmt: skip
    assert unknown.returncode == 2 and "unknown migration '0009_nope'" in unknown.stderr
    with psycopg.connect(target.conninfo) as conn:
        found = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [working])
        assert found.fetchone() == (0,)  # nothing seeded
