"""The seven reference migrations on real PostgreSQL: what each up fixes, and that each down
restores the previous schema and data exactly (quarantined and archived rows included)."""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from vpbench.dataset.audit import VOICE_MEMO_V1_PATTERN, VOICE_MEMO_V2_PATTERN, run_audit
from vpbench.dataset.fixtures import fixtures_dir
from vpbench.dataset.profiles import DirtyRates, get_profile
from vpbench.dataset.seed import SeedResult, seed_database
from vpbench.dataset.snapshot import TableSnapshot, snapshot_tables
from vpbench.measure.runner import PreparedStatements
from vpbench.measure.writecost import app_inserts
from vpbench.migrations.folder import Migration
from vpbench.migrations.sources import discover_migrations
from vpbench.migrations.statements import group_transactions, split_statements
from vpbench.server.target import ServerTarget

Conn = psycopg.Connection[tuple[Any, ...]]
Rows = list[tuple[Any, ...]]

MIGRATIONS_DIR = fixtures_dir() / "migrations"
MIGRATION_IDS = (
    "0001_quiz_attempt_links",
    "0002_reflection_links",
    "0003_voice_memo_metadata",
    "0004_video_page_indexes",
    "0005_quiz_jsonb",
    "0006_computed_scores",
    "0007_drop_retired_quiz_columns",
)


def through(last: str) -> tuple[str, ...]:
    """The reference steps up to and including ``last``."""
    return MIGRATION_IDS[: MIGRATION_IDS.index(last) + 1]


AUDIT_CHECKS = frozenset(
    {
        "orphaned_quiz_attempts",
        "reflection_null_links",
        "reflection_dangling_links",
        "stale_stored_scores",
        "voice_memo_metadata_in_text",
        "malformed_voice_metadata",
        "missing_foreign_keys",
    }
)
DIRT = {
    "default": DirtyRates(),
    "clean": DirtyRates.clean(),
    "stale_half": DirtyRates(stale_scores=0.5),
}
NOBODY = "00000000-0000-4000-8000-000000000000"
LEGACY_QUIZ_COLUMNS = [
    *("id", "user_id", "video_id", "course_id", "questions", "answers"),
    *("score", "total", "percentage", "started_at", "completed_at"),
]

_NOT_SYSTEM = "{0} !~ '^pg_' AND {0} <> 'information_schema'"
SCHEMA_QUERIES = {
    "schemas": "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
    f"WHERE {_NOT_SYSTEM.format('nspname')} ORDER BY 1",
    "relations": "SELECT n.nspname, c.relname, c.relkind, c.relacl::text, c.reloptions::text, "
    "obj_description(c.oid, 'pg_class') FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE {_NOT_SYSTEM.format('n.nspname')} ORDER BY 1, 2",
    # Listed by name: a column a down adds back comes last (PostgreSQL cannot put it back
    # in its place without rewriting the table), and SQL names its columns. Some server
    # builds stamp each column with a "pg_attver=<n>" option that changes on every ALTER;
    # that is the server's bookkeeping, not the schema.
    "columns": "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
    "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attstattarget, "
    "ARRAY(SELECT o FROM unnest(a.attoptions) AS o WHERE o !~ '^pg_attver=')::text, "
    "col_description(c.oid, a.attnum) FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    f"WHERE {_NOT_SYSTEM.format('n.nspname')} AND c.relkind IN ('r', 'p', 'v', 'm') "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2, 3",
    "constraints": "SELECT n.nspname, k.conrelid::regclass::text, k.conname, k.contype, "
    "pg_get_constraintdef(k.oid), k.convalidated FROM pg_constraint k "
    "JOIN pg_namespace n ON n.oid = k.connamespace "
    f"WHERE {_NOT_SYSTEM.format('n.nspname')} ORDER BY 1, 2, 3",
    "indexes": "SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE {_NOT_SYSTEM.format('n.nspname')} ORDER BY 1, 2",
    "functions": "SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid), "
    "p.provolatile, p.proparallel FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    f"WHERE {_NOT_SYSTEM.format('n.nspname')} ORDER BY 1",
    "views": "SELECT schemaname, viewname, definition FROM pg_views "
    f"WHERE {_NOT_SYSTEM.format('schemaname')} ORDER BY 1, 2",
}


@dataclass(frozen=True)
class State:
    """Everything a down must put back: table contents, schema, and what the audit sees."""

    tables: dict[str, TableSnapshot]
    schema: dict[str, Rows]
    audit: dict[str, int]


def capture(conn: Conn, *, audit: bool = True) -> State:
    schema = {name: conn.execute(query).fetchall() for name, query in SCHEMA_QUERIES.items()}
    found = run_audit(conn).checks if audit else ()
    counts = {c.name: c.violations for c in found if c.group == "reference"}
    return State(snapshot_tables(conn), schema, counts)


def assert_same(actual: State, expected: State) -> None:
    assert actual.tables == expected.tables
    for part, rows in expected.schema.items():
        assert actual.schema[part] == rows, part
    assert actual.audit == expected.audit


MIGRATIONS = {m.id: m for m in discover_migrations(MIGRATIONS_DIR)}


def apply(conn: Conn, migration_id: str, direction: str, units_run: int | None = None) -> list[str]:
    """Run up.sql or down.sql as the runner does, without its ledger: a transactional step
    as one transaction, another one statement (or BEGIN block) at a time; only the first
    ``units_run`` of those, to stop it part-way. Returns the NOTICE messages it raised."""
    migration = MIGRATIONS[migration_id]
    script = migration.up_sql if direction == "up" else migration.down_sql
    units = [split_statements(script)] if migration.transactional else group_transactions(script)
    units = units[:units_run]
    notices: list[str] = []

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        notices.append(diagnostic.message_primary or "")

    conn.add_notice_handler(keep)
    try:
        for unit in units:
            if len(unit) == 1 and not migration.transactional:
                conn.execute(unit[0][0].encode())
                continue
            with conn.transaction():
                for statement, _ in unit:
                    conn.execute(statement.encode())
    finally:
        conn.remove_notice_handler(keep)
    return notices


def metadata(migration_id: str) -> dict[str, Any]:
    with (MIGRATIONS_DIR / migration_id / "migration.toml").open("rb") as file:
        return tomllib.load(file)


def scalar(conn: Conn, query: str | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
    statement = query.encode() if isinstance(query, str) else query
    row = conn.execute(statement, params or None)
    found = row.fetchone()
    assert found is not None
    return found[0]


def column_shapes(conn: Conn, table: str) -> dict[str, tuple[str, str]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s",
        [table],
    ).fetchall()
    return {name: (data_type, nullable) for name, data_type, nullable in rows}


def constraints(conn: Conn, table: str) -> dict[str, tuple[str, str, bool]]:
    """name -> (definition, ON DELETE action code, validated)."""
    rows = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid), confdeltype, convalidated "
        "FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype IN ('f', 'c')",
        [table],
    ).fetchall()
    return {name: (definition, action, valid) for name, definition, action, valid in rows}


def indexes(conn: Conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s",
        [table],
    ).fetchall()
    return dict(rows)


def filenodes(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT pg_relation_filenode('quiz_attempts'), pg_relation_filenode('reflections')"
    ).fetchone()
    assert row is not None
    return row


def plan_indexes(conn: Conn, query: sql.Composed) -> set[str]:
    """The indexes the planner uses for ``query`` when sequential scans are discouraged."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        document = scalar(conn, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query))
    plan = json.loads(document) if isinstance(document, str) else document

    def walk(node: dict[str, Any]) -> Iterator[str]:
        if "Index Name" in node:
            yield node["Index Name"]
        for child in node.get("Plans", []):
            yield from walk(child)

    return set(walk(plan[0]["Plan"]))


# ---- what each step must achieve, checked right after its up.sql -----------------------


@dataclass(frozen=True)
class Step:
    conn: Conn
    seeded: SeedResult
    before: State
    after: State
    notices: list[str]


def check_quiz_attempt_links(step: Step) -> None:
    conn, orphans = step.conn, step.before.audit["orphaned_quiz_attempts"]
    assert orphans == step.seeded.dirty_counts["orphaned_quiz_attempts"]
    quarantined = conn.execute(
        "SELECT count(*), "
        "count(*) FILTER (WHERE starts_with(reason, '0001_quiz_attempt_links: ')) "
        "FROM quarantine.quiz_attempts"
    ).fetchone()
    assert quarantined == (orphans, orphans)
    rows_before = step.before.tables["quiz_attempts"].rows
    assert step.after.tables["quiz_attempts"].rows + orphans == rows_before
    # Expand: uuid links beside the text ones, which the deployed app still reads and writes.
    shapes = column_shapes(conn, "quiz_attempts")
    assert shapes["video_id"] == shapes["course_id"] == ("text", "YES")
    assert shapes["video_uuid"] == shapes["course_uuid"] == ("uuid", "NO")
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM quiz_attempts WHERE video_uuid <> video_id::uuid "
            "OR course_uuid <> course_id::uuid",
        )
        == 0
    )
    foreign_keys = constraints(conn, "quiz_attempts")
    for column, parent in (
        ("video_uuid", "videos"),
        ("course_uuid", "courses"),
        ("user_id", "users"),
    ):
        definition, on_delete, validated = foreign_keys[f"quiz_attempts_{column}_fkey"]
        assert definition == f"FOREIGN KEY ({column}) REFERENCES {parent}(id) ON DELETE CASCADE"
        assert (on_delete, validated) == ("c", True)
    assert "quiz_attempts_links_not_null_check" not in foreign_keys  # SET NOT NULL took over
    assert any(f": quarantined {orphans} and linked " in n for n in step.notices)
    # Only the reflections' three links are left for 0002.
    assert step.after.audit["missing_foreign_keys"] == 3
    # What the deployed app writes (text links) gets its uuids from the trigger; a link that
    # is no uuid, or points at no video, is refused.
    row = conn.execute("SELECT video_id, course_id FROM quiz_attempts LIMIT 1").fetchone()
    assert row is not None
    insert = (
        "INSERT INTO quiz_attempts (id, user_id, video_id, course_id, questions, answers, score, "
        "total, percentage, started_at, completed_at) SELECT %s, user_id, %s, course_id, "
        "questions, answers, score, total, percentage, started_at, completed_at "
        "FROM quiz_attempts LIMIT 1"
    )
    with conn.transaction(force_rollback=True):
        conn.execute(insert, [NOBODY, row[0].upper()])
        linked = conn.execute(
            "SELECT video_id, video_uuid::text FROM quiz_attempts WHERE id = %s", [NOBODY]
        ).fetchone()
    assert linked == (row[0].upper(), row[0].lower())  # the text keeps its spelling
    # The app deployed after it writes the uuid links only (the text ones are retired).
    statement, _ = app_inserts(conn, "quiz_attempts", 1, 1) or (None, None)
    assert statement is not None and "video_uuid" in statement.params
    assert not {"video_id", "course_id"} & set(statement.params)
    for broken, error in (
        ("video-42", psycopg.errors.NotNullViolation),
        (NOBODY, psycopg.errors.ForeignKeyViolation),
    ):
        with conn.transaction(force_rollback=True), pytest.raises(error):
            conn.execute(insert, [NOBODY, broken])


def check_reflection_links(step: Step) -> None:
    conn, dirt = step.conn, step.seeded.dirty_counts
    unrepairable = dirt["null_reflection_video"] + dirt["dangling_reflection_links"]
    quarantined = scalar(
        conn,
        "SELECT count(*) FROM quarantine.reflections "
        "WHERE starts_with(reason, '0002_reflection_links: ')",
    )
    assert quarantined == unrepairable
    backfilled = scalar(conn, "SELECT count(*) FROM archive.reflection_course_backfill")
    assert backfilled == dirt["null_reflection_course"]
    assert (
        step.after.tables["reflections"].rows + quarantined
        == step.before.tables["reflections"].rows
    )
    shapes = column_shapes(conn, "reflections")
    assert shapes["video_id"] == shapes["course_id"] == ("uuid", "NO")
    foreign_keys = constraints(conn, "reflections")
    assert set(foreign_keys) == {
        f"reflections_{c}_fkey" for c in ("video_id", "course_id", "user_id")
    }
    assert all(fk[1:] == ("c", True) for fk in foreign_keys.values())


def check_video_page_indexes(step: Step) -> None:
    conn = step.conn
    assert set(indexes(conn, "quiz_attempts")) == {
        "quiz_attempts_pkey",
        "quiz_attempts_user_video_completed_idx",
        "quiz_attempts_user_course_idx",
        "quiz_attempts_video_idx",
    }
    voice = indexes(conn, "reflections")["reflections_voice_video_created_idx"]
    assert voice.endswith("(video_id, created_at DESC) WHERE (kind = 'voice'::text)")
    row = conn.execute(
        "SELECT user_id, video_id, course_id FROM quiz_attempts "
        "GROUP BY 1, 2, 3 ORDER BY count(*) DESC, 1, 2 LIMIT 1"
    ).fetchone()
    assert row is not None
    user, video, course = map(sql.Literal, map(str, row))
    queries = (
        (
            "quiz_attempts_user_video_completed_idx",
            "SELECT id, score FROM quiz_attempts WHERE user_id = {user} AND video_uuid = {video} "
            "ORDER BY completed_at DESC LIMIT 5",
        ),
        (
            "quiz_attempts_user_course_idx",
            "SELECT count(*) FROM quiz_attempts WHERE user_id = {user} AND course_uuid = {course}",
        ),
        (
            "quiz_attempts_video_idx",
            "SELECT count(*) FROM quiz_attempts WHERE video_uuid = {video}",
        ),
        (
            "reflections_user_video_created_idx",
            "SELECT id FROM reflections WHERE user_id = {user} AND video_id = {video} "
            "ORDER BY created_at DESC LIMIT 5",
        ),
        (
            "reflections_voice_video_created_idx",
            "SELECT id, content FROM reflections WHERE video_id = {video} AND kind = 'voice' "
            "ORDER BY created_at DESC LIMIT 20",
        ),
    )
    for index, text in queries:
        query = sql.SQL(text).format(user=user, video=video, course=course)
        assert index in plan_indexes(conn, query), text
    # A user's best attempt at a video of a course is one probe, not a read of every
    # attempt: percentage is the course index's last key (course_progress's variant).
    best = sql.SQL(
        "EXPLAIN SELECT max(percentage) FROM quiz_attempts "
        "WHERE user_id = {} AND course_uuid = {} AND video_uuid = {}"
    ).format(user, course, video)
    plan = "\n".join(str(line) for (line,) in conn.execute(best))
    assert "Index Only Scan Backward using quiz_attempts_user_course_idx" in plan, plan
    row = conn.execute(
        "SELECT user_id, course_id FROM reflections WHERE kind = 'voice' LIMIT 1"
    ).fetchone()
    assert row is not None
    user, course = (sql.Literal(str(v)) for v in row)
    query = sql.SQL(
        "SELECT id FROM reflections WHERE user_id = {} AND course_id = {} AND kind = 'voice' "
        "ORDER BY created_at DESC LIMIT 10"
    ).format(user, course)
    assert "reflections_voice_user_course_created_idx" in plan_indexes(conn, query)
    # It carries 0003's duration: recorded time per course from the index alone.
    covering = indexes(conn, "reflections")["reflections_voice_user_course_created_idx"]
    assert covering.endswith("INCLUDE (audio_duration_seconds) WHERE (kind = 'voice'::text)")
    query = sql.SQL(
        "SELECT id FROM reflections WHERE course_id = {} AND kind = 'voice' "
        "AND audio_duration_seconds > 60"
    ).format(course)
    assert "reflections_voice_course_duration_idx" in plan_indexes(conn, query)


def check_quiz_jsonb(step: Step) -> None:
    conn = step.conn
    shapes = column_shapes(conn, "quiz_attempts")
    # Expand: the jsonb columns beside the text ones, which the deployed app still writes.
    assert shapes["questions"] == shapes["answers"] == ("text", "NO")
    assert shapes["questions_json"] == shapes["answers_json"] == ("jsonb", "YES")
    checks = constraints(conn, "quiz_attempts")
    for column in ("questions", "answers"):
        definition, _, validated = checks[f"quiz_attempts_{column}_json_check"]
        json = f"{column}_json"
        assert definition == (
            f"CHECK ((({json} IS NOT NULL) AND (jsonb_typeof({json}) = 'array'::text)))"
        )
        assert validated
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM quiz_attempts "
            "WHERE questions_json IS DISTINCT FROM questions::jsonb "
            "OR answers_json IS DISTINCT FROM answers::jsonb",
        )
        == 0
    )
    assert any(": filled " in n for n in step.notices)
    # What the deployed app writes (text only) is parsed by the trigger.
    with conn.transaction(force_rollback=True):
        conn.execute(
            "INSERT INTO quiz_attempts (id, user_id, video_id, course_id, questions, answers, "
            "score, total, percentage, started_at, completed_at) "
            "SELECT %s, user_id, video_id, course_id, '[ ]', '[]', 0, 0, 0, started_at, "
            "completed_at FROM quiz_attempts LIMIT 1",
            [NOBODY],
        )
        parsed = conn.execute(
            "SELECT questions, questions_json, answers_json FROM quiz_attempts WHERE id = %s",
            [NOBODY],
        ).fetchone()
    assert parsed == ("[ ]", [], [])
    # The app deployed after it writes the jsonb only (the text columns are retired): the
    # trigger renders the text for the app deployed before.
    statement, _ = app_inserts(conn, "quiz_attempts", 1, 1) or (None, None)
    assert statement is not None and not {"questions", "answers"} & set(statement.params)
    with conn.transaction(force_rollback=True):
        conn.execute(
            "INSERT INTO quiz_attempts (id, user_id, video_uuid, course_uuid, questions_json, "
            "answers_json, score, total, percentage, started_at, completed_at) "
            "SELECT %s, user_id, video_uuid, course_uuid, '[]', '[]', 0, 0, 0, started_at, "
            "completed_at FROM quiz_attempts LIMIT 1",
            [NOBODY],
        )
        rendered = conn.execute(
            "SELECT questions, answers, video_id IS NOT NULL FROM quiz_attempts WHERE id = %s",
            [NOBODY],
        ).fetchone()
    assert rendered == ("[]", "[]", True)


def expected_score(questions: list[Any], answers: list[Any]) -> tuple[int, int, Decimal]:
    correct = {q["id"]: q["correct"] for q in questions}
    score = sum(1 for a in answers if correct.get(a["question_id"], object()) == a["choice"])
    total = len(questions)
    percentage = Decimal(100 * score) / total if total else Decimal(0)
    return score, total, percentage.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def check_computed_scores(step: Step) -> None:
    conn = step.conn
    stale = step.before.audit["stale_stored_scores"]
    assert scalar(conn, "SELECT count(*) FROM archive.quiz_attempt_stored_scores") == stale
    assert any(f": corrected {stale} quiz attempts" in n for n in step.notices)
    # The columns the deployed app reads and writes stay; no view, nothing to parse on read.
    assert list(column_shapes(conn, "quiz_attempts")) == [
        *LEGACY_QUIZ_COLUMNS,
        *("video_uuid", "course_uuid", "questions_json", "answers_json"),
    ]
    assert scalar(conn, "SELECT count(*) FROM pg_views WHERE schemaname = 'public'") == 0
    assert constraints(conn, "quiz_attempts")["quiz_attempts_scores_computed_check"][2]
    functions = conn.execute(
        "SELECT proname, provolatile, proparallel FROM pg_proc "
        "WHERE proname LIKE 'quiz\\_attempt\\_%' ORDER BY 1"
    ).fetchall()
    assert functions == [(f"quiz_attempt_{n}", "i", "s") for n in ("percentage", "score", "total")]
    for questions, answers, score, total, percentage in conn.execute(
        "SELECT questions_json, answers_json, score, total, percentage FROM quiz_attempts"
    ):
        assert (score, total, percentage) == expected_score(questions, answers)


def test_scores_are_computed_on_write_and_refused_when_stale_without_the_trigger(
    seed: Callable[[DirtyRates], Seeded],
) -> None:
    conn = seed(DirtyRates()).conn
    for migration_id in through("0006_computed_scores"):
        apply(conn, migration_id, "up")
    source = scalar(conn, "SELECT id FROM quiz_attempts ORDER BY id LIMIT 1")
    columns = "user_id, video_id, course_id, video_uuid, course_uuid, questions, answers, "
    copy = (
        f"INSERT INTO quiz_attempts (id, {columns} questions_json, answers_json, score, total, "
        f"percentage, started_at, completed_at) SELECT {{}}, {columns} questions_json, "
        "answers_json, total + 1, total, 1.5, started_at, completed_at FROM quiz_attempts "
        "WHERE id = {}"
    )
    # The deployed app sends its own (here wrong) values: the stored ones are the true ones.
    conn.execute(sql.SQL(copy).format(sql.Literal(NOBODY), sql.Literal(source)))
    row = conn.execute(
        "SELECT questions_json, answers_json, score, total, percentage FROM quiz_attempts "
        "WHERE id = %s",
        [NOBODY],
    ).fetchone()
    assert row is not None
    assert tuple(row[2:]) == expected_score(row[0], row[1])
    # Where triggers do not fire (a logical replica, a restore), the CHECK refuses them.
    other = "00000000-0000-4000-8000-000000000001"
    with conn.transaction(), pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(sql.SQL(copy).format(sql.Literal(other), sql.Literal(source)))


def expected_audio(content: str) -> tuple[Any, ...]:
    if v1 := re.match(VOICE_MEMO_V1_PATTERN, content):
        return int(v1[1]) * 60 + int(v1[2]), v1[3], int(v1[4]) * 1024, v1[5]
    if v2 := re.match(VOICE_MEMO_V2_PATTERN, content):
        size = (Decimal(v2[3]) * 1_048_576).to_integral_value(rounding=ROUND_HALF_UP)
        return int(v2[1]), v2[2], int(size), v2[4]
    return None, None, None, None


def check_voice_memo_metadata(step: Step) -> None:
    conn = step.conn
    malformed = step.before.audit["malformed_voice_metadata"]
    assert step.after.audit["voice_memo_metadata_in_text"] == 0
    assert step.after.audit["malformed_voice_metadata"] == 0
    assert any(f": {malformed} voice memo(s) have a header" in n for n in step.notices)
    shapes = column_shapes(conn, "reflections")
    assert shapes["audio_duration_seconds"] == ("integer", "YES")
    assert shapes["audio_format"] == shapes["audio_url"] == ("text", "YES")
    assert shapes["audio_header_status"] == ("text", "YES")
    assert shapes["audio_size_bytes"] == ("bigint", "YES")
    assert constraints(conn, "reflections")["reflections_audio_header_check"][2]
    rows = conn.execute(
        "SELECT kind, content, audio_header_status, audio_duration_seconds, audio_format, "
        "audio_size_bytes, audio_url FROM reflections"
    ).fetchall()
    for kind, content, status, *audio in rows:
        expected = expected_audio(content) if kind == "voice" else (None, None, None, None)
        assert tuple(audio) == expected, content
        if kind == "voice":
            assert status == ("malformed" if expected[0] is None else "parsed"), content
        else:
            assert status is None
    assert sum(status == "malformed" for _, _, status, *_ in rows) == malformed
    assert sum(kind == "voice" and audio[0] is not None for kind, _, _, *audio in rows) > 0
    # What the deployed app writes (content only) is parsed by the trigger.
    with conn.transaction(force_rollback=True):
        conn.execute(
            "INSERT INTO reflections (id, user_id, video_id, course_id, kind, content, created_at) "
            "SELECT %s, user_id, video_id, course_id, 'voice', "
            "'Voice memo (75s, m4a, 1.5 MB): https://media.example/n.m4a', now() "
            "FROM reflections LIMIT 1",
            [NOBODY],
        )
        parsed = conn.execute(
            "SELECT audio_header_status, audio_duration_seconds, audio_format, audio_size_bytes "
            "FROM reflections WHERE id = %s",
            [NOBODY],
        ).fetchone()
    assert parsed == ("parsed", 75, "m4a", 1_572_864)


def check_drop_retired_quiz_columns(step: Step) -> None:
    conn = step.conn
    # Seeded text spells every link and document as its uuid or jsonb renders it.
    assert scalar(conn, "SELECT count(*) FROM archive.quiz_attempt_text_columns") == 0
    assert any(": archived 0 quiz attempt(s) whose text differs" in n for n in step.notices)
    assert set(column_shapes(conn, "quiz_attempts")) == {
        *("id", "user_id", "video_uuid", "course_uuid", "questions_json", "answers_json"),
        *("score", "total", "percentage", "started_at", "completed_at"),
    }
    triggers = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'quiz_attempts'::regclass "
        "AND NOT tgisinternal"
    ).fetchall()
    assert triggers == [("quiz_attempts_compute_scores",)]
    assert step.after.tables["quiz_attempts"] != step.before.tables["quiz_attempts"]
    assert step.after.tables["quiz_attempts"].rows == step.before.tables["quiz_attempts"].rows
    # The app deployed before it writes the uuid links and the jsonb only: its INSERT works,
    # and the scores are still computed from the answers.
    statement, rows = app_inserts(conn, "quiz_attempts", 1, 1) or (None, [])
    assert statement is not None and {"video_uuid", "questions_json"} <= set(statement.params)
    with conn.transaction(force_rollback=True):
        PreparedStatements().execute(conn, statement, {**rows[0], "score": -1})
        row = conn.execute(
            "SELECT questions_json, answers_json, score, total, percentage FROM quiz_attempts "
            "WHERE id = %s",
            [rows[0]["id"]],
        ).fetchone()
    assert row is not None and tuple(row[2:]) == expected_score(row[0], row[1])


STEP_CHECKS: dict[str, Callable[[Step], None]] = {
    "0001_quiz_attempt_links": check_quiz_attempt_links,
    "0002_reflection_links": check_reflection_links,
    "0003_voice_memo_metadata": check_voice_memo_metadata,
    "0004_video_page_indexes": check_video_page_indexes,
    "0005_quiz_jsonb": check_quiz_jsonb,
    "0006_computed_scores": check_computed_scores,
    "0007_drop_retired_quiz_columns": check_drop_retired_quiz_columns,
}


# ---- fixtures and tests ----------------------------------------------------------------

_database_numbers = itertools.count(1)


@dataclass(frozen=True)
class Seeded:
    conn: Conn
    result: SeedResult


@pytest.fixture
def seed(target: ServerTarget, session_prefix: str) -> Iterator[Callable[[DirtyRates], Seeded]]:
    """Seed fresh tiny databases; their connections are closed at the end of the test."""
    opened: list[Conn] = []

    def make(dirty: DirtyRates) -> Seeded:
        name = f"{session_prefix}_refmig_{next(_database_numbers)}"
        result = seed_database(target, name, get_profile("tiny"), seed=11, dirty=dirty)
        conn = psycopg.connect(target.for_database(name), autocommit=True)
        opened.append(conn)
        return Seeded(conn, result)

    yield make
    for conn in opened:
        conn.close()


def production_shape_problems(migration: Migration) -> list[str]:
    """What keeps a step from running on a live database without long blocking locks:
    indexes built inside a transaction, VALIDATE in the transaction that added the
    constraint, SET NOT NULL without a validated CHECK (outside a rewrite)."""
    problems = []
    for direction, script in (("up", migration.up_sql), ("down", migration.down_sql)):
        units = (
            [split_statements(script)] if migration.transactional else group_transactions(script)
        )
        for unit in units:
            text = "\n".join(statement.upper() for statement, _ in unit)
            if re.search(r"\b(CREATE|DROP) INDEX\b(?! CONCURRENTLY)", text):
                problems.append(f"{direction}: an index built or dropped in a transaction")
            if "NOT VALID" in text and "VALIDATE CONSTRAINT" in text:
                problems.append(f"{direction}: VALIDATE in the transaction of its NOT VALID")
            # SET NOT NULL scans the table under ACCESS EXCLUSIVE, unless a validated CHECK
            # proves it or the same ALTER rewrites the table anyway (a type change).
            lone = [s for s, _ in unit if "SET NOT NULL" in s.upper() and " TYPE " not in s.upper()]
            if lone and not re.search(r"IS NOT NULL\b.*\) NOT VALID", script, re.S | re.I):
                problems.append(f"{direction}: SET NOT NULL without a validated CHECK first")
    return problems


def test_production_shape_finds_blocking_steps(tmp_path: Path) -> None:
    folder = tmp_path / "0001_blocking"
    folder.mkdir()
    (folder / "migration.toml").write_text('title = "t"\n')
    (folder / "down.sql").write_text("SELECT 1;\n")
    (folder / "up.sql").write_text(
        "CREATE INDEX i ON t (a);\n"
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT c;\n"
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL;\n"
    )
    (blocking,) = discover_migrations(tmp_path)
    assert production_shape_problems(blocking) == [
        "up: an index built or dropped in a transaction",
        "up: VALIDATE in the transaction of its NOT VALID",
        "up: SET NOT NULL without a validated CHECK first",
    ]


def test_metadata_describes_each_step() -> None:
    found = sorted(p.name for p in MIGRATIONS_DIR.iterdir() if p.is_dir())
    assert found == list(MIGRATION_IDS)
    for migration_id in MIGRATION_IDS:
        meta = metadata(migration_id)
        assert isinstance(meta["title"], str) and meta["title"]
        sentences = re.split(r"(?<=\.)\s+", meta["why"].strip())
        assert 1 <= len(sentences) <= 3, migration_id
        assert set(meta["fixes"]) <= AUDIT_CHECKS, migration_id
        assert isinstance(meta["rewrites_table"], bool)
        assert production_shape_problems(MIGRATIONS[migration_id]) == [], migration_id
        if meta["rewrites_table"]:  # a rewrite under ACCESS EXCLUSIVE is declared downtime
            assert meta["max_stall"] and meta["downtime"], migration_id
    # The backfill parses the headers with exactly the audit's patterns.
    up_sql = (MIGRATIONS_DIR / "0003_voice_memo_metadata" / "up.sql").read_text(encoding="utf-8")
    assert f"'{VOICE_MEMO_V1_PATTERN}'" in up_sql
    assert f"'{VOICE_MEMO_V2_PATTERN}'" in up_sql


@pytest.mark.slow
@pytest.mark.parametrize("dirt", DIRT, ids=DIRT)
def test_each_step_fixes_reverts_exactly_and_reapplies(
    seed: Callable[[DirtyRates], Seeded], dirt: str
) -> None:
    seeded = seed(DIRT[dirt])
    conn = seeded.conn
    fresh = capture(conn)
    for migration_id in MIGRATION_IDS:
        meta = metadata(migration_id)
        before, nodes_before = capture(conn), filenodes(conn)
        notices = apply(conn, migration_id, "up")
        after = capture(conn)
        assert (filenodes(conn) != nodes_before) is meta["rewrites_table"], migration_id
        for name in meta["fixes"]:
            assert after.audit[name] == 0, (migration_id, name)
        # No step makes any check worse.
        assert all(after.audit[n] <= before.audit[n] for n in AUDIT_CHECKS), migration_id
        STEP_CHECKS[migration_id](Step(conn, seeded.result, before, after, notices))

        apply(conn, migration_id, "down")
        assert_same(capture(conn), before)
        apply(conn, migration_id, "up")
        assert_same(capture(conn), after)

    for migration_id in reversed(MIGRATION_IDS):
        apply(conn, migration_id, "down")
    assert_same(capture(conn), fresh)


@pytest.mark.slow
@pytest.mark.parametrize("dirt", DIRT, ids=DIRT)
def test_whole_series_up_then_down_restores_the_seed(
    seed: Callable[[DirtyRates], Seeded], dirt: str
) -> None:
    conn = seed(DIRT[dirt]).conn
    fresh = capture(conn)
    for migration_id in MIGRATION_IDS:
        apply(conn, migration_id, "up")
    # Audit clean, every dirty row accounted for by exactly one check before the series.
    assert capture(conn).audit == dict.fromkeys(AUDIT_CHECKS, 0)
    voice = scalar(conn, "SELECT count(*) FROM reflections WHERE kind = 'voice'")
    quarantined_voice = scalar(
        conn, "SELECT count(*) FROM quarantine.reflections WHERE kind = 'voice'"
    )
    in_text, malformed = (
        fresh.audit[n] for n in ("voice_memo_metadata_in_text", "malformed_voice_metadata")
    )
    assert in_text + malformed == voice + quarantined_voice
    if dirt == "clean":
        assert malformed == 0
        assert scalar(conn, "SELECT count(*) FROM quarantine.quiz_attempts") == 0
    for migration_id in reversed(MIGRATION_IDS):
        apply(conn, migration_id, "down")
    assert_same(capture(conn), fresh)


def test_values_the_new_types_would_respell_are_restored(
    seed: Callable[[DirtyRates], Seeded],
) -> None:
    conn = seed(DirtyRates()).conn
    linked = [
        r[0]
        for r in conn.execute(
            "SELECT q.id FROM quiz_attempts q JOIN videos v ON v.id::text = q.video_id "
            "ORDER BY q.id LIMIT 6"
        ).fetchall()
    ]
    upper, braces, not_uuid, no_user, pretty, duplicate_key = linked
    reflection = scalar(
        conn,
        "SELECT r.id FROM reflections r JOIN videos v ON v.id = r.video_id "
        "WHERE r.course_id IS NOT NULL ORDER BY r.id LIMIT 1",
    )
    memo = scalar(conn, "SELECT id FROM reflections WHERE kind = 'voice' ORDER BY id LIMIT 1")
    with conn.transaction():
        for statement, params in (
            ("UPDATE quiz_attempts SET video_id = upper(video_id) WHERE id = %s", [upper]),
            (
                "UPDATE quiz_attempts SET course_id = '{' || replace(course_id, '-', '') || '}' "
                "WHERE id = %s",
                [braces],
            ),
            ("UPDATE quiz_attempts SET video_id = 'video-42' WHERE id = %s", [not_uuid]),
            ("UPDATE quiz_attempts SET user_id = %s WHERE id = %s", [NOBODY, no_user]),
            (
                "UPDATE quiz_attempts SET questions = jsonb_pretty(questions::jsonb) WHERE id = %s",
                [pretty],
            ),
            (
                "UPDATE quiz_attempts SET answers = "
                """'[{"choice": 1, "choice": 2, "question_id": "q1"}]' WHERE id = %s""",
                [duplicate_key],
            ),
            # Backfilled by 0002, then quarantined for its missing user: down must put back
            # the row *and* its NULL course.
            (
                "UPDATE reflections SET course_id = NULL, user_id = %s WHERE id = %s",
                [NOBODY, reflection],
            ),
            (
                "UPDATE reflections SET content = '[voice memo] duration 99999999999:00 "
                "| format m4a | size 1 KB | https://media.example/x.m4a' WHERE id = %s",
                [memo],
            ),
        ):
            conn.execute(statement.encode(), params)
    fresh = capture(conn)
    notices = [n for m in through("0006_computed_scores") for n in apply(conn, m, "up")]

    # uuid respells ids; the text links, kept beside the uuids, keep the spelling as written.
    raw_ids = {
        attempt: (video, course)
        for attempt, video, course in conn.execute(
            "SELECT id, video_id, course_id FROM quiz_attempts WHERE id = ANY (%s) "
            "AND video_uuid = video_id::uuid AND course_uuid = course_id::uuid",
            [[upper, braces]],
        )
    }
    assert set(raw_ids) == {upper, braces}
    assert raw_ids[upper][0] != raw_ids[upper][0].lower()
    assert raw_ids[braces][1].startswith("{") and "-" not in raw_ids[braces][1]
    reasons: dict[Any, str] = dict(
        conn.execute("SELECT id, reason FROM quarantine.quiz_attempts").fetchall()
    )
    assert reasons[not_uuid] == "0001_quiz_attempt_links: video_id is not a uuid"
    assert reasons[no_user] == "0001_quiz_attempt_links: user_id points at no user"
    # jsonb respells JSON; the text columns, kept beside it, keep the spelling as written.
    respelled: dict[Any, tuple[str, str]] = dict(
        conn.execute(
            "SELECT id, (questions, answers) FROM quiz_attempts WHERE id = ANY (%s) "
            "AND (questions::jsonb::text <> questions OR answers::jsonb::text <> answers) "
            "AND questions_json = questions::jsonb AND answers_json = answers::jsonb",
            [[pretty, duplicate_key]],
        ).fetchall()
    )
    assert set(respelled) == {pretty, duplicate_key}
    assert "\n" in respelled[pretty][0]
    assert '"choice": 1, "choice": 2' in respelled[duplicate_key][1]
    row = conn.execute(
        "SELECT course_id IS NOT NULL, reason FROM quarantine.reflections WHERE id = %s",
        [reflection],
    ).fetchone()
    assert row == (True, "0002_reflection_links: user_id points at no user")
    assert scalar(
        conn,
        "SELECT audio_duration_seconds IS NULL AND audio_size_bytes IS NULL "
        "FROM reflections WHERE id = %s",
        (memo,),
    )
    unparsed = fresh.audit["malformed_voice_metadata"] + 1
    assert any(f": {unparsed} voice memo(s) have a header" in n for n in notices)
    # The contract archives exactly the spellings its columns took away; down puts them back.
    apply(conn, "0007_drop_retired_quiz_columns", "up")
    archived = {
        attempt: tuple(column is not None for column in columns)
        for attempt, *columns in conn.execute(
            "SELECT quiz_attempt_id, video_id, course_id, questions, answers "
            "FROM archive.quiz_attempt_text_columns"
        )
    }
    assert archived == {
        upper: (True, False, False, False),
        braces: (False, True, False, False),
        pretty: (False, False, True, False),
        duplicate_key: (False, False, False, True),
    }

    for migration_id in reversed(MIGRATION_IDS):
        apply(conn, migration_id, "down")
    assert_same(capture(conn), fresh)


def test_the_contract_stopped_anywhere_is_undone_by_down_and_finished_by_running_it_again(
    seed: Callable[[DirtyRates], Seeded],
) -> None:
    """0007 stopped after its archive trigger, after its sweep, after the switch: down
    restores the state before it every time, and a run from where it stopped finishes it.
    A spelling the app writes after the sweep passed its row is archived all the same."""
    conn = seed(DirtyRates()).conn
    for migration_id in through("0006_computed_scores"):
        apply(conn, migration_id, "up")
    contract = "0007_drop_retired_quiz_columns"
    attempt = scalar(conn, "SELECT id FROM quiz_attempts ORDER BY id LIMIT 1")
    units = len(group_transactions(MIGRATIONS[contract].up_sql))
    for stopped_after in range(1, units):
        before = capture(conn)
        apply(conn, contract, "up", stopped_after)
        apply(conn, contract, "down")
        assert_same(capture(conn), before)
    before = capture(conn)
    apply(conn, contract, "up", 2)  # the sweep is done: the old app writes a spelling
    conn.execute("UPDATE quiz_attempts SET video_id = upper(video_id) WHERE id = %s", [attempt])
    with pytest.raises(psycopg.errors.UndefinedColumn):  # stopped after the switch...
        apply(conn, contract, "up", 3)
        conn.execute("SELECT video_id FROM quiz_attempts LIMIT 1")
    notices = apply(conn, contract, "up")  # ...and run again from the start
    assert any("the text columns are gone already" in n for n in notices)
    archived = conn.execute(
        "SELECT quiz_attempt_id, video_id IS NOT NULL, questions IS NULL "
        "FROM archive.quiz_attempt_text_columns"
    ).fetchall()
    assert archived == [(attempt, True, True)]
    after = capture(conn)
    apply(conn, contract, "down")
    upper = scalar(conn, "SELECT video_id FROM quiz_attempts WHERE id = %s", (attempt,))
    assert upper == upper.upper() != upper.lower()
    conn.execute("UPDATE quiz_attempts SET video_id = lower(video_id) WHERE id = %s", [attempt])
    assert_same(capture(conn), before)
    apply(conn, contract, "up")
    assert capture(conn).tables == after.tables  # the lowered spelling renders as the uuid


def test_a_failed_up_is_undone_by_its_down(seed: Callable[[DirtyRates], Seeded]) -> None:
    """A document that is not JSON stops the backfill at its batch, one that is not an array
    stops the VALIDATE after it: either way the step is half-applied (the jsonb columns
    exist, the earlier batches are filled), and down puts everything back."""
    conn = seed(DirtyRates()).conn
    for migration_id in through("0004_video_page_indexes"):
        apply(conn, migration_id, "up")
    attempt = scalar(conn, "SELECT id FROM quiz_attempts ORDER BY id LIMIT 1")
    for document, error in (
        ("[{", psycopg.errors.InvalidTextRepresentation),
        ('{"not": "an array"}', psycopg.errors.CheckViolation),
    ):
        conn.execute("UPDATE quiz_attempts SET questions = %s WHERE id = %s", [document, attempt])
        # The audit itself cannot score a document that is not an array: compare without it.
        before = capture(conn, audit=False)
        with pytest.raises(error):
            apply(conn, "0005_quiz_jsonb", "up")
        assert column_shapes(conn, "quiz_attempts")["questions_json"][0] == "jsonb"
        apply(conn, "0005_quiz_jsonb", "down")
        assert_same(capture(conn, audit=False), before)


def test_down_keeps_what_it_did_not_quarantine(seed: Callable[[DirtyRates], Seeded]) -> None:
    conn = seed(DirtyRates()).conn
    with conn.transaction():
        conn.execute("CREATE SCHEMA quarantine")
        conn.execute(
            "CREATE TABLE quarantine.quiz_attempts (LIKE public.quiz_attempts, "
            "quarantined_at timestamptz NOT NULL DEFAULT now(), reason text NOT NULL, "
            "PRIMARY KEY (id))"
        )
        conn.execute(
            "INSERT INTO quarantine.quiz_attempts SELECT %s, user_id, video_id, course_id, "
            "questions, answers, score, total, percentage, started_at, completed_at, now(), "
            "'support ticket 123' FROM quiz_attempts LIMIT 1",
            [NOBODY],
        )
    before = capture(conn)
    apply(conn, "0001_quiz_attempt_links", "up")
    quarantined = scalar(conn, "SELECT count(*) FROM quarantine.quiz_attempts")
    assert quarantined == before.audit["orphaned_quiz_attempts"] + 1
    apply(conn, "0001_quiz_attempt_links", "down")
    assert_same(capture(conn), before)
    assert scalar(conn, "SELECT reason FROM quarantine.quiz_attempts") == "support ticket 123"
