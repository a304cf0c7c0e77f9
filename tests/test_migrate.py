"""Migration ledger, up/down, checksums and failures against real PostgreSQL."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import DatabaseFactory, exclusive_lock_up, traffic_workload
from vpbench.cli.main import main
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.dataset.snapshot import schema_shape, snapshot_tables
from vpbench.errors import FixtureError, MigrationError, MigrationsFormatError
from vpbench.migrations.apply import (
    BASE,
    apply_step,
    migration_states,
    plan_down,
    plan_up,
)
from vpbench.migrations.folder import Migration
from vpbench.migrations.locking import LockPolicy
from vpbench.migrations.sources import default_migrations_dir, discover_migrations
from vpbench.migrations.statements import (
    is_begin,
    is_commit,
    runs_outside_a_transaction,
    split_statements,
)
from vpbench.server.target import ServerTarget

FIRST = "0001_quiz_attempt_links"


@pytest.fixture
def legacy(target: ServerTarget, session_prefix: str) -> Iterator[psycopg.Connection[Any]]:
    name = f"{session_prefix}_migrate"
    seed_database(target, name, get_profile("tiny"), seed=5)
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        yield conn


def copy_series(folder: Path, *ids: str) -> Path:
    for migration_id in ids:
        shutil.copytree(default_migrations_dir() / migration_id, folder / migration_id)
    return folder


def add_migration(folder: Path, name: str, up: str, down: str = "SELECT 1;") -> None:
    (folder / name).mkdir()
    (folder / name / "up.sql").write_text(up)
    (folder / name / "down.sql").write_text(down)
    (folder / name / "migration.toml").write_text(f'title = "{name}"\n')


def non_transactional(folder: Path, name: str, up: str, down: str) -> Migration:
    """A one-step series whose step runs statement by statement."""
    add_migration(folder, name, up, down)
    toml = folder / name / "migration.toml"
    toml.write_text(toml.read_text() + "transactional = false\n")
    (migration,) = discover_migrations(folder)
    return migration


def test_up_down_and_the_ledger(legacy: psycopg.Connection[Any]) -> None:
    migrations = discover_migrations()
    assert [m.id for m in migrations][:2] == [FIRST, "0002_reflection_links"]
    states = migration_states(legacy, migrations)
    assert not any(s.applied for s in states)
    for migration in plan_up(states, "0003_voice_memo_metadata"):
        apply_step(legacy, migration, "up")
    states = migration_states(legacy, migrations)
    assert [s.migration.id for s in states if s.applied] == [m.id for m in migrations[:3]]
    ledger = legacy.execute("SELECT id, checksum FROM vpbench.migrations ORDER BY id").fetchall()
    assert ledger == [(m.id, m.checksum) for m in migrations[:3]]
    assert [m.id for m in plan_down(states, None)] == ["0003_voice_memo_metadata"]
    assert [m.id for m in plan_down(states, FIRST)] == [
        "0003_voice_memo_metadata",
        "0002_reflection_links",
    ]
    for migration in plan_down(states, BASE):
        apply_step(legacy, migration, "down")
    assert legacy.execute("SELECT count(*) FROM vpbench.migrations").fetchone() == (0,)
    with pytest.raises(MigrationError, match="unknown migration '9999_nope'"):
        plan_up(migration_states(legacy, migrations), "9999_nope")


def test_an_edited_applied_migration_is_refused(
    legacy: psycopg.Connection[Any], tmp_path: Path
) -> None:
    folder = copy_series(tmp_path, FIRST)
    apply_step(legacy, discover_migrations(folder)[0], "up")
    up = folder / FIRST / "up.sql"
    up.write_text(up.read_text() + "\n-- a harmless edit is still an edit\n")
    with pytest.raises(MigrationError, match=f"migration {FIRST} was edited after it was applied"):
        migration_states(legacy, discover_migrations(folder))


def test_a_missing_down_is_refused_before_anything_runs(tmp_path: Path) -> None:
    folder = copy_series(tmp_path, FIRST)
    (folder / FIRST / "down.sql").unlink()
    with pytest.raises(FixtureError, match=f"migration {FIRST} has no down.sql"):
        discover_migrations(folder)


def test_a_failing_step_rolls_back_and_names_file_and_line(
    legacy: psycopg.Connection[Any], tmp_path: Path
) -> None:
    folder = copy_series(tmp_path, FIRST)
    add_migration(
        folder,
        "0002_broken",
        "ALTER TABLE reflections ADD COLUMN mood text;\n"
        "UPDATE reflections SET mood = 'fine';\n"
        "UPDATE reflections SET mood = no_such_column;\n",
    )
    migrations = discover_migrations(folder)
    apply_step(legacy, migrations[0], "up")
    shape, rows = schema_shape(legacy), snapshot_tables(legacy)
    with pytest.raises(MigrationError) as error:
        apply_step(legacy, migrations[1], "up")
    assert str(error.value).startswith(
        f"{folder / '0002_broken' / 'up.sql'}:3: migration 0002_broken up failed: "
        'column "no_such_column" does not exist'
    )
    assert error.value.sqlstate == "42703"
    assert schema_shape(legacy) == shape and snapshot_tables(legacy) == rows
    states = migration_states(legacy, migrations)
    assert [s.migration.id for s in states if s.applied] == [FIRST]


def test_split_statements_respects_quotes_and_bodies() -> None:
    script = (
        "CREATE INDEX CONCURRENTLY a ON t (x);\n-- comment; here\n"
        "DO $$ BEGIN PERFORM 1; END $$;\nSELECT ';' AS semi"
    )
    assert [s for s, _ in split_statements(script)] == [
        "CREATE INDEX CONCURRENTLY a ON t (x)",
        "DO $$ BEGIN PERFORM 1; END $$",
        "SELECT ';' AS semi",
    ]


@pytest.mark.parametrize(
    ("script", "statements"),
    [
        # An escaped quote in an E-string does not end it (a regular expression split here).
        ("SELECT E'a\\';b' AS e;\nSELECT 2", ["SELECT E'a\\';b' AS e", "SELECT 2"]),
        # Comments nest in PostgreSQL: the first */ does not end this one.
        ("/* outer /* inner; */ still; */ SELECT 1; SELECT 2",
         ["/* outer /* inner; */ still; */ SELECT 1", "SELECT 2"]),
        ('SELECT 1 AS "a;b"; SELECT $tag$ ; $$ ; $tag$',
         ['SELECT 1 AS "a;b"', "SELECT $tag$ ; $$ ; $tag$"]),
        ("BEGIN;\nUPDATE t SET x = 1;\nCOMMIT;", ["BEGIN", "UPDATE t SET x = 1", "COMMIT"]),
        ("SELECT 'é;ü'; SELECT 3", ["SELECT 'é;ü'", "SELECT 3"]),
        # Unreadable by the scanner: one statement, so that the server names the error.
        ("SELECT 1; SELECT 'open", ["SELECT 1; SELECT 'open"]),
    ],
)  # fmt: skip
def test_statements_are_split_by_postgresqls_scanner(script: str, statements: list[str]) -> None:
    found = split_statements(script)
    assert [text for text, _ in found] == statements
    assert all(script[offset:].startswith(text) for text, offset in found)


@pytest.mark.parametrize(
    ("statement", "outside", "begin", "commit"),
    [
        ("create  index\nconcurrently i on t (a)", True, False, False),
        # Words in a comment, a string or a quoted name are not keywords (twins).
        ("CREATE INDEX /* not CONCURRENTLY */ i ON t (a)", False, False, False),
        ("COMMENT ON TABLE t IS 'VACUUM it later, CONCURRENTLY'", False, False, False),
        ('CREATE TABLE "concurrently" (a int)', False, False, False),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY v", False, False, False),
        ("vacuum (analyze) t", True, False, False),
        ("ALTER SYSTEM SET work_mem = '8MB'", True, False, False),
        ("begin isolation level serializable", False, True, False),
        ("START TRANSACTION", False, True, False),
        ("DO $$ BEGIN PERFORM 1; END $$", False, False, False),
        ("end work", False, False, True),
    ],
)
def test_statement_kinds_are_read_from_keywords(
    statement: str, outside: bool, begin: bool, commit: bool
) -> None:
    assert runs_outside_a_transaction(statement) is outside
    assert (is_begin(statement), is_commit(statement)) == (begin, commit)


def test_a_comment_naming_concurrently_leaves_a_step_transactional(tmp_path: Path) -> None:
    add_migration(
        tmp_path, "0001_note", "-- later: CREATE INDEX CONCURRENTLY\nSELECT 1 /* VACUUM */;"
    )
    (migration,) = discover_migrations(tmp_path)
    assert migration.transactional


def test_non_transactional_migration_runs_statement_by_statement(
    legacy: psycopg.Connection[Any], tmp_path: Path
) -> None:
    migration = non_transactional(
        tmp_path,
        "0001_concurrent_index",
        "CREATE INDEX CONCURRENTLY reflections_kind_idx ON reflections (kind);\n"
        "CREATE INDEX CONCURRENTLY reflections_created_idx ON reflections (created_at);\n",
        "DROP INDEX CONCURRENTLY reflections_kind_idx;\n"
        "DROP INDEX CONCURRENTLY reflections_created_idx;\n",
    )
    apply_step(legacy, migration, "up")
    names = {r[0] for r in legacy.execute("SELECT indexname FROM pg_indexes").fetchall()}
    assert {"reflections_kind_idx", "reflections_created_idx"} <= names
    apply_step(legacy, migration, "down")
    names = {r[0] for r in legacy.execute("SELECT indexname FROM pg_indexes").fetchall()}
    assert "reflections_kind_idx" not in names


def test_under_a_stall_budget_lock_timeout_is_halved_except_for_concurrently(
    legacy: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A brief ACCESS EXCLUSIVE waits at most half the 1 s budget (the app queues behind
    it); CREATE INDEX CONCURRENTLY keeps the full timeout (nothing queues behind it, and a
    timeout would leave an invalid index)."""
    migration = non_transactional(
        tmp_path,
        "0001_column_and_index",
        "ALTER TABLE reflections ADD COLUMN probe integer;\n"
        "CREATE INDEX CONCURRENTLY reflections_probe_idx ON reflections (probe);\n",
        "DROP INDEX CONCURRENTLY reflections_probe_idx;\n"
        "ALTER TABLE reflections DROP COLUMN probe;\n",
    )
    locks = LockPolicy().within(1000)
    assert (locks.timeout_for(concurrent=False), locks.timeout_for(concurrent=True)) == (
        500,
        2000,
    )
    applied = apply_step(legacy, migration, "up", locks)
    try:
        assert [r.lock_timeout for r in applied.statements] == ["500ms", "2s"]
    finally:
        apply_step(legacy, migration, "down")
    # without a budget, one timeout for both (the twin)
    applied = apply_step(legacy, migration, "up", LockPolicy())
    apply_step(legacy, migration, "down")
    assert [r.lock_timeout for r in applied.statements] == ["2s", "2s"]


def test_cli_migrate(
    target: ServerTarget,
    session_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    create_database: DatabaseFactory,
) -> None:
    name = f"{session_prefix}_cli_migrate"
    seed_database(target, name, get_profile("tiny"), seed=6)
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)

    def vpbench(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        captured = capsys.readouterr()
        return int(exit_info.value.code or 0), captured.out, captured.err

    code, out, _ = vpbench("migrate", "up", "0002_reflection_links", "--db", name)
    assert code == 0 and f"up {FIRST}" in out and "up 0002_reflection_links" in out
    code, out, _ = vpbench("migrate", "status", "--db", name)
    assert code == 0 and "pending" in out and "0006_computed_scores" in out
    code, out, _ = vpbench("migrate", "down", "--db", name)
    assert code == 0 and "down 0002_reflection_links" in out
    code, _, err = vpbench("migrate", "up", "9999_nope", "--db", name)
    assert code == 2 and "unknown migration '9999_nope'" in err

    conninfo = create_database("migrate_foreign")
    foreign = str(psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE mine (id int)")
    code, _, err = vpbench("migrate", "down", "base", "--db", foreign)
    assert code == 2 and "refusing to revert migrations in database" in err


QUICK_LOCKS = LockPolicy(timeout_ms=200, attempts=30, first_pause_ms=50, max_pause_ms=200)


@pytest.fixture
def held_lock(target: ServerTarget, legacy: psycopg.Connection[Any]) -> Iterator[threading.Event]:
    """Another session holding ACCESS SHARE on quiz_attempts (a long report, say) until the
    event is set, or for 2 s at most."""
    release, holding = threading.Event(), threading.Event()
    conninfo = target.for_database(str(legacy.info.dbname))

    def hold() -> None:
        with psycopg.connect(conninfo) as conn, conn.transaction():
            conn.execute("LOCK TABLE quiz_attempts IN ACCESS SHARE MODE")
            holding.set()
            release.wait(2.0)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    yield release
    release.set()
    holder.join()


ADD_COLUMN = "ALTER TABLE quiz_attempts ADD COLUMN reviewed boolean;"


def test_a_lock_timeout_is_retried_until_the_holder_ends(
    legacy: psycopg.Connection[Any], held_lock: threading.Event, tmp_path: Path
) -> None:
    add_migration(tmp_path, "0001_add_reviewed", "SELECT 1;\n" + ADD_COLUMN)
    (migration,) = discover_migrations(tmp_path)
    applied = apply_step(legacy, migration, "up", QUICK_LOCKS)
    retries = applied.lock_retries
    assert len(retries) >= 2 and [r.attempt for r in retries] == list(range(1, len(retries) + 1))
    assert all(r.line == 2 and "lock timeout" in r.statement for r in retries)
    assert legacy.execute("SELECT to_regclass('vpbench.migrations')").fetchone() != (None,)
    columns = legacy.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'quiz_attempts'::regclass "
        "AND attname = 'reviewed'"
    ).fetchone()
    assert columns == (1,)
    assert legacy.execute("SHOW lock_timeout").fetchone() == ("0",)  # the session's own again


def test_without_retries_a_lock_timeout_fails_the_step_and_changes_nothing(
    legacy: psycopg.Connection[Any], held_lock: threading.Event, tmp_path: Path
) -> None:
    add_migration(tmp_path, "0001_add_reviewed", ADD_COLUMN)
    (migration,) = discover_migrations(tmp_path)
    with pytest.raises(MigrationError) as failed:
        apply_step(legacy, migration, "up", replace(QUICK_LOCKS, attempts=1))
    assert failed.value.sqlstate == "55P03" and failed.value.line == 1
    assert "1 attempt of lock_timeout 200 ms" in str(failed.value)
    assert legacy.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'quiz_attempts'::regclass "
        "AND attname = 'reviewed'"
    ).fetchone() == (0,)


def test_non_transactional_statements_retry_one_by_one(
    legacy: psycopg.Connection[Any], held_lock: threading.Event, tmp_path: Path
) -> None:
    add_migration(tmp_path, "0001_add_reviewed", "CREATE TABLE side (id int);\n" + ADD_COLUMN)
    (tmp_path / "0001_add_reviewed" / "migration.toml").write_text(
        'title = "t"\ntransactional = false\n'
    )
    (migration,) = discover_migrations(tmp_path)
    applied = apply_step(legacy, migration, "up", QUICK_LOCKS)
    assert applied.lock_retries and {r.line for r in applied.lock_retries} == {2}
    assert legacy.execute("SHOW lock_timeout").fetchone() == ("0",)


def test_a_begin_block_runs_and_retries_as_one_transaction(
    legacy: psycopg.Connection[Any], held_lock: threading.Event, tmp_path: Path
) -> None:
    add_migration(
        tmp_path,
        "0001_block",
        "CREATE TABLE side (id int);\n"
        "BEGIN;\nINSERT INTO side VALUES (1);\n" + ADD_COLUMN + "\nCOMMIT;\n"
        "CREATE INDEX CONCURRENTLY side_id ON side (id);\n",
    )
    (tmp_path / "0001_block" / "migration.toml").write_text('title = "t"\ntransactional = false\n')
    (migration,) = discover_migrations(tmp_path)
    applied = apply_step(legacy, migration, "up", QUICK_LOCKS)
    # The lock timeout hit the ALTER inside the block: the whole block ran again, so the
    # INSERT before it counts once.
    assert applied.lock_retries and {r.line for r in applied.lock_retries} == {4}
    assert legacy.execute("SELECT count(*) FROM side").fetchone() == (1,)
    runs = {r.line: r for r in applied.statements}
    assert set(runs) == {1, 3, 4, 6}
    block_end = runs[4].committed_s
    assert block_end is not None and runs[3].committed_s == block_end
    (hold,) = [h for h in applied.lock_holds if h.lock == "AccessExclusiveLock on quiz_attempts"]
    assert hold.until_s == block_end  # held until the block committed, not the statement
    assert runs[6].committed_s is None


@pytest.mark.parametrize(
    ("script", "line", "problem"),
    [
        ("SELECT 1;\nBEGIN;\nSELECT 2;\n", 2, "BEGIN without COMMIT"),
        ("SELECT 1;\nCOMMIT;\n", 2, "COMMIT without BEGIN"),
        ("BEGIN;\nSELECT 1;\nBEGIN;\nCOMMIT;\n", 3, "BEGIN inside a BEGIN block"),
    ],
)
def test_an_unbalanced_begin_block_is_refused_before_anything_runs(
    tmp_path: Path, script: str, line: int, problem: str
) -> None:
    add_migration(tmp_path, "0001_unbalanced", "CREATE TABLE side (id int);\n" + script)
    (tmp_path / "0001_unbalanced" / "migration.toml").write_text(
        'title = "t"\ntransactional = false\n'
    )
    with pytest.raises(MigrationsFormatError) as refused:
        discover_migrations(tmp_path)  # so nothing can run, nor connect
    assert refused.value.line == line + 1 and problem in refused.value.message
    assert str(refused.value.path).endswith("0001_unbalanced/up.sql")
    # Balanced, the same script is read (twin).
    (tmp_path / "0001_unbalanced" / "up.sql").write_text(
        "CREATE TABLE side (id int);\nBEGIN;\nCOMMIT;\n"
    )
    (migration,) = discover_migrations(tmp_path)
    assert not migration.transactional


def test_a_transactional_step_with_a_statement_that_cannot_run_in_one_is_refused(
    tmp_path: Path,
) -> None:
    add_migration(tmp_path, "0001_index", "SELECT 1;\nCREATE INDEX CONCURRENTLY i ON t (a);\n")
    with pytest.raises(MigrationsFormatError, match="cannot run inside the step's one tr"):
        discover_migrations(tmp_path)
    (tmp_path / "0001_index" / "migration.toml").write_text('title = "t"\ntransactional = false\n')
    (migration,) = discover_migrations(tmp_path)  # declared: read (twin)
    assert not migration.transactional


@pytest.mark.slow
def test_cli_migrate_up_retries_and_says_so(
    target: ServerTarget,
    legacy: psycopg.Connection[Any],
    held_lock: threading.Event,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    add_migration(tmp_path, "0001_add_reviewed", ADD_COLUMN)
    common = ["migrate", "up", "--migrations", str(tmp_path), "--db", str(legacy.info.dbname)]
    with pytest.raises(SystemExit) as refused:
        main([*common, "--lock-timeout", "100ms", "--lock-attempts", "1"])
    err = capsys.readouterr().err
    assert refused.value.code == 1 and "[SQLSTATE 55P03]" in err and "--lock-attempts" in err
    with pytest.raises(SystemExit) as done:
        main([*common, "--lock-timeout", "200ms", "--lock-attempts", "30"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "lock-timeout retr" in out and "up 0001_add_reviewed" in out


def test_each_statement_is_observed_on_the_server(
    legacy: psycopg.Connection[Any], tmp_path: Path
) -> None:
    add_migration(
        tmp_path,
        "0001_rewrite",
        "CREATE TABLE side (id int);\n"
        "ALTER TABLE quiz_attempts ALTER COLUMN score TYPE bigint;\n"
        "CREATE INDEX side_id ON side (id);\n",
    )
    (migration,) = discover_migrations(tmp_path)
    applied = apply_step(legacy, migration, "up")
    runs = applied.statements
    assert [r.line for r in runs] == [1, 2, 3]
    assert runs[0].rewrote == () and "AccessExclusiveLock on side" in runs[0].locks
    # A type change rewrites the table (new files for it and its indexes), under ACCESS
    # EXCLUSIVE held until the step commits.
    assert (
        "quiz_attempts" in runs[1].rewrote
        and "AccessExclusiveLock on quiz_attempts" in runs[1].locks
    )
    assert runs[2].rewrote == () and "ShareLock on side" in runs[2].locks
    assert all(r.seconds >= 0 and r.started_s >= 0 for r in runs)
    assert {(r.lock_timeout, r.statement_timeout) for r in runs} == {("2s", "0")}
    # Held from the statement that took it until the step committed.
    (hold,) = [h for h in applied.lock_holds if h.lock == "AccessExclusiveLock on quiz_attempts"]
    assert hold.line == 2 and hold.from_s == runs[1].started_s and hold.until_s == applied.seconds


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('max_stall = "soon"\ndowntime = "x"\n', "is not a duration such as 500ms, 5s or 2min"),
        ('max_stall = "5s"\n', "max_stall needs a downtime"),
    ],
)
def test_a_declared_downtime_needs_a_duration_and_a_why(
    tmp_path: Path, toml: str, message: str
) -> None:
    add_migration(tmp_path, "0001_slow", "SELECT 1;")
    (tmp_path / "0001_slow" / "migration.toml").write_text('title = "t"\n' + toml)
    with pytest.raises(FixtureError, match=message):
        discover_migrations(tmp_path)
    (tmp_path / "0001_slow" / "migration.toml").write_text(
        'title = "t"\nmax_stall = "1.5s"\ndowntime = "booked window"\n'
    )
    (migration,) = discover_migrations(tmp_path)
    assert migration.max_stall_ms == 1500 and migration.downtime == "booked window"


def test_deploy_before_names_a_later_step(tmp_path: Path) -> None:
    add_migration(tmp_path, "0001_expand", "SELECT 1;")
    add_migration(tmp_path, "0002_contract", "SELECT 1;")
    for step, named, what in (
        ("0001_expand", "0001_expand", "this migration"),
        ("0002_contract", "0001_expand", "an earlier one"),
    ):
        side = tmp_path / step / "migration.toml"
        side.write_text(f'title = "t"\n\ndeploy_before = "{named}"\n')
        with pytest.raises(FixtureError) as error:
            discover_migrations(tmp_path)
        assert str(error.value) == (
            f"{side}:3: deploy_before: {named!r} is {what}: it must name a later one"
        )
        side.write_text('title = "t"\n')
    # A later step, or one still to be written (the contract often comes in a later change).
    for named in ("0002_contract", "0003_to_come"):
        (tmp_path / "0001_expand" / "migration.toml").write_text(f'deploy_before = "{named}"\n')
        expand, contract = discover_migrations(tmp_path)
        assert (expand.deploy_before, contract.deploy_before) == (named, "")


@pytest.mark.slow
def test_cli_migrate_up_under_load_stops_at_a_step_over_budget(
    target: ServerTarget,
    legacy: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    folder = tmp_path / "migrations"
    folder.mkdir()
    add_migration(folder, "0001_quick", "CREATE TABLE side (id int);")
    add_migration(
        folder, "0002_exclusive",
        exclusive_lock_up(3),
    )  # fmt: skip
    add_migration(folder, "0003_never", "CREATE TABLE never (id int);")
    workload = traffic_workload(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "up", "--migrations", str(folder), "--db", str(legacy.info.dbname),
              "--under-load", "--workload", str(workload), "--max-stall", "1s"])  # fmt: skip
    captured = capsys.readouterr()
    assert stopped.value.code == 1, captured.err
    assert "0002_exclusive stalled the app beyond its budget" in captured.err
    lines = [line for line in captured.out.splitlines() if "under load" in line]
    assert len(lines) == 2 and "within the 1 s budget" in lines[0] and "over" in lines[1]
    assert "AccessExclusiveLock" in captured.out
    applied = legacy.execute("SELECT id FROM vpbench.migrations ORDER BY id").fetchall()
    assert applied == [("0001_quick",), ("0002_exclusive",)]  # 0003 was not applied
