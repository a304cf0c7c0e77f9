"""The audit on small hand-made datasets with known damage, before and after migrating."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from vpbench.dataset.audit import VOICE_MEMO_V1_PATTERN, VOICE_MEMO_V2_PATTERN, run_audit
from vpbench.dataset.audit_result import AuditReport, CheckResult
from vpbench.dataset.fixtures import legacy_schema_sql
from vpbench.errors import UsageError

Conn = psycopg.Connection[tuple[Any, ...]]
ConnFactory = Callable[..., Conn]

CHECK_NAMES = (
    "orphaned_quiz_attempts",
    "reflection_null_links",
    "reflection_dangling_links",
    "stale_stored_scores",
    "voice_memo_metadata_in_text",
    "malformed_voice_metadata",
    "missing_foreign_keys",
)
ALL_FOREIGN_KEYS = (
    "quiz_attempts.user_id -> users",
    "quiz_attempts.video_id -> videos",
    "quiz_attempts.course_id -> courses",
    "reflections.user_id -> users",
    "reflections.video_id -> videos",
    "reflections.course_id -> courses",
)

USER = "10000000-0000-0000-0000-000000000001"
COURSE_1 = "20000000-0000-0000-0000-000000000001"
COURSE_2 = "20000000-0000-0000-0000-000000000002"
VIDEO_1 = "30000000-0000-0000-0000-000000000001"
VIDEO_2 = "30000000-0000-0000-0000-000000000002"
DELETED_VIDEO = "3fffffff-0000-0000-0000-000000000009"
COURSE_OF = {VIDEO_1: COURSE_1, VIDEO_2: COURSE_2, DELETED_VIDEO: COURSE_1}

QUESTIONS = json.dumps(
    [
        {"id": f"q{i}", "prompt": f"Question {i}?", "options": ["a", "b", "c", "d"], "correct": c}
        for i, c in ((1, 2), (2, 0), (3, 1))
    ]
)

V1_HEADER = (
    "[voice memo] duration 2:15 | format m4a | size 1843 KB | "
    "https://media.learnapp.example/memos/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0.m4a"
)
V2_HEADER = (
    "Voice memo (135s, webm, 1.8 MB): "
    "https://media.learnapp.example/memos/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1.webm"
)
V1_MALFORMED = "[voice memo] duration ?:?? | format  | size unknown | "
V2_MALFORMED = "Voice memo (upload failed)"


def quiz(n: int) -> str:
    return f"40000000-0000-0000-0000-{n:012d}"


def reflection(n: int) -> str:
    return f"50000000-0000-0000-0000-{n:012d}"


def answers(*choices: int) -> str:
    return json.dumps([{"question_id": f"q{i}", "choice": c} for i, c in enumerate(choices, 1)])


# (id, video_id, answers, stored score, total, percentage, dirty?)
QUIZ_ROWS: tuple[tuple[str, str | None, str, int, int, str, bool], ...] = (
    (quiz(1), VIDEO_1, answers(2, 0, 1), 3, 3, "100.00", False),
    (quiz(2), DELETED_VIDEO, answers(2, 0, 0), 2, 3, "66.67", True),  # orphan
    (quiz(3), None, answers(0, 0, 0), 1, 3, "33.33", True),  # orphan (NULL)
    (quiz(4), VIDEO_2, answers(2, 0, 3), 3, 3, "100.00", True),  # stale score
    (quiz(5), VIDEO_1, answers(1, 1, 1), 1, 3, "50.00", True),  # stale percentage
    (quiz(6), VIDEO_2, answers(2), 1, 3, "33.33", False),  # unanswered questions
    (quiz(7), VIDEO_1, answers(2, 0, 1), 3, 4, "100.00", True),  # stale total
)
# (id, video_id, course_id, kind, content, dirty?)
REFLECTION_ROWS: tuple[tuple[str, str | None, str | None, str, str, bool], ...] = (
    (reflection(1), VIDEO_1, COURSE_1, "text", "Indexes finally make sense.", False),
    (reflection(2), None, COURSE_1, "text", "No video link.", True),
    (reflection(3), VIDEO_1, None, "text", "No course link.", True),
    (reflection(4), DELETED_VIDEO, COURSE_1, "text", "Video was deleted.", True),
    (reflection(5), VIDEO_1, COURSE_1, "voice", f"{V1_HEADER}\nI liked it.", False),
    (reflection(6), VIDEO_2, COURSE_2, "voice", f"{V1_MALFORMED}\nLost audio.", True),
    (reflection(7), VIDEO_2, COURSE_2, "voice", f"{V2_HEADER}\nShort one.", False),
    (reflection(8), VIDEO_2, COURSE_2, "voice", f"{V2_MALFORMED}\nNo audio.", True),
)

MIGRATE_LINKS = (
    "CREATE TABLE quiz_attempts_quarantine (LIKE quiz_attempts)",
    "WITH moved AS (DELETE FROM quiz_attempts q WHERE video_id IS NULL OR NOT EXISTS "
    "(SELECT FROM videos v WHERE v.id::text = q.video_id) RETURNING q.*) "
    "INSERT INTO quiz_attempts_quarantine SELECT * FROM moved",
    "ALTER TABLE quiz_attempts ALTER video_id TYPE uuid USING video_id::uuid, "
    "ALTER course_id TYPE uuid USING course_id::uuid",
    "ALTER TABLE quiz_attempts ADD FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE, "
    "ADD FOREIGN KEY (video_id) REFERENCES videos ON DELETE CASCADE, "
    "ADD FOREIGN KEY (course_id) REFERENCES courses ON DELETE CASCADE",
    "UPDATE reflections r SET course_id = v.course_id FROM videos v "
    "WHERE r.course_id IS NULL AND r.video_id = v.id",
    "CREATE TABLE reflections_quarantine (LIKE reflections)",
    "WITH moved AS (DELETE FROM reflections r WHERE video_id IS NULL OR course_id IS NULL "
    "OR NOT EXISTS (SELECT FROM videos v WHERE v.id = r.video_id) "
    "OR NOT EXISTS (SELECT FROM courses c WHERE c.id = r.course_id) RETURNING r.*) "
    "INSERT INTO reflections_quarantine SELECT * FROM moved",
    "ALTER TABLE reflections ALTER video_id SET NOT NULL, ALTER course_id SET NOT NULL, "
    "ADD FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE, "
    "ADD FOREIGN KEY (video_id) REFERENCES videos ON DELETE CASCADE, "
    "ADD FOREIGN KEY (course_id) REFERENCES courses ON DELETE CASCADE",
)
MIGRATE_JSONB = (
    "ALTER TABLE quiz_attempts ALTER questions TYPE jsonb USING questions::jsonb, "
    "ALTER answers TYPE jsonb USING answers::jsonb",
)
MIGRATE_SCORES = (
    "ALTER TABLE quiz_attempts DROP COLUMN score, DROP COLUMN total, DROP COLUMN percentage",
)
MIGRATE_AUDIO = (
    "ALTER TABLE reflections ADD COLUMN audio_duration_seconds integer, "
    "ADD COLUMN audio_format text, ADD COLUMN audio_size_bytes bigint, ADD COLUMN audio_url text",
)
FILL_AUDIO: tuple[tuple[str, str], ...] = (
    (
        "UPDATE reflections r SET audio_duration_seconds = m[1]::int * 60 + m[2]::int, "
        "audio_format = m[3], audio_size_bytes = m[4]::bigint * 1024, audio_url = m[5] "
        "FROM (SELECT id, regexp_match(content, %s) AS m FROM reflections "
        "WHERE kind = 'voice') p WHERE p.id = r.id AND p.m IS NOT NULL",
        VOICE_MEMO_V1_PATTERN,
    ),
    (
        "UPDATE reflections r SET audio_duration_seconds = m[1]::int, audio_format = m[2], "
        "audio_size_bytes = round(m[3]::numeric * 1048576), audio_url = m[4] "
        "FROM (SELECT id, regexp_match(content, %s) AS m FROM reflections "
        "WHERE kind = 'voice') p WHERE p.id = r.id AND p.m IS NOT NULL",
        VOICE_MEMO_V2_PATTERN,
    ),
)


def seed(conn: Conn, *, dirty: bool) -> None:
    conn.execute(legacy_schema_sql())
    conn.execute("INSERT INTO users VALUES (%s, 'a@example.org', 'A', now())", [USER])
    for course_id in (COURSE_1, COURSE_2):
        conn.execute("INSERT INTO courses VALUES (%s, 'Course', 'About', now())", [course_id])
    for position, video_id in enumerate((VIDEO_1, VIDEO_2), 1):
        conn.execute(
            "INSERT INTO videos VALUES (%s, %s, %s, 'Video', 600, now())",
            [video_id, COURSE_OF[video_id], position],
        )
    for qid, video, given, score, total, percentage, is_dirty in QUIZ_ROWS:
        if is_dirty and not dirty:
            continue
        quiz_course = COURSE_OF[video] if video else COURSE_1
        conn.execute(
            "INSERT INTO quiz_attempts VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())",
            [qid, USER, video, quiz_course, QUESTIONS, given, score, total, percentage],
        )
    for rid, video, course, kind, content, is_dirty in REFLECTION_ROWS:
        if is_dirty and not dirty:
            continue
        conn.execute(
            "INSERT INTO reflections VALUES (%s, %s, %s, %s, %s, %s, now())",
            [rid, USER, video, course, kind, content],
        )


def migrate(conn: Conn, *steps: tuple[str, ...]) -> None:
    for step in steps:
        for statement in step:
            conn.execute(statement)


def migrate_fully(conn: Conn) -> None:
    migrate(conn, MIGRATE_LINKS, MIGRATE_JSONB, MIGRATE_SCORES, MIGRATE_AUDIO)
    for statement, pattern in FILL_AUDIO:
        conn.execute(statement, [pattern])


_database_numbers = itertools.count(1)


@pytest.fixture
def connect(create_database: Callable[[str], str]) -> Iterator[ConnFactory]:
    """Open connections to fresh databases; all are closed at the end of the test."""
    opened: list[Conn] = []

    def open_database(*, autocommit: bool = True) -> Conn:
        conninfo = create_database(f"audit_{next(_database_numbers)}")
        conn = psycopg.connect(conninfo, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield open_database
    for conn in opened:
        conn.close()


@pytest.fixture
def dirty(connect: ConnFactory) -> Conn:
    conn = connect()
    seed(conn, dirty=True)
    return conn


@pytest.fixture
def clean(connect: ConnFactory) -> Conn:
    conn = connect()
    seed(conn, dirty=False)
    return conn


def reference(report: AuditReport) -> list[CheckResult]:
    """The reference schema's checks (the generic ones follow them)."""
    return [c for c in report.checks if c.group == "reference"]


def counts(report: AuditReport) -> dict[str, int]:
    return {c.name: c.violations for c in reference(report)}


def test_legacy_dirty_data_counts_every_violation(dirty: Conn) -> None:
    report = run_audit(dirty, sample_size=10)
    assert tuple(c.name for c in reference(report)) == CHECK_NAMES
    assert all(c.applicable for c in report.checks)
    assert counts(report) == {
        "orphaned_quiz_attempts": 2,
        "reflection_null_links": 2,
        "reflection_dangling_links": 1,
        "stale_stored_scores": 3,
        "voice_memo_metadata_in_text": 2,
        "malformed_voice_metadata": 2,
        "missing_foreign_keys": 6,
    }
    assert report.total_violations == 18
    assert report.check("orphaned_quiz_attempts").examples == (quiz(2), quiz(3))
    assert report.check("reflection_null_links").examples == (reflection(2), reflection(3))
    assert report.check("reflection_dangling_links").examples == (reflection(4),)
    assert report.check("stale_stored_scores").examples == (quiz(4), quiz(5), quiz(7))
    metadata_in_text = report.check("voice_memo_metadata_in_text")
    # No memo is counted twice: a header in neither format is malformed, not parseable.
    assert metadata_in_text.examples == (reflection(5), reflection(7))
    assert "every parseable voice memo" in metadata_in_text.note
    assert report.check("malformed_voice_metadata").examples == (reflection(6), reflection(8))
    assert report.check("missing_foreign_keys").examples == ALL_FOREIGN_KEYS


def test_examples_are_capped_by_sample_size(dirty: Conn) -> None:
    report = run_audit(dirty, sample_size=1)
    assert report.check("stale_stored_scores").violations == 3
    assert report.check("stale_stored_scores").examples == (quiz(4),)
    assert report.check("missing_foreign_keys").examples == ALL_FOREIGN_KEYS[:1]
    assert all(c.examples == () for c in run_audit(dirty, sample_size=0).checks)
    with pytest.raises(UsageError):
        run_audit(dirty, sample_size=-1)


def test_clean_data_has_no_data_violations(clean: Conn) -> None:
    report = counts(run_audit(clean))
    for name in (*CHECK_NAMES[:4], "malformed_voice_metadata"):
        assert report[name] == 0, name
    assert report["voice_memo_metadata_in_text"] == 2
    assert report["missing_foreign_keys"] == 6


def test_a_non_array_document_is_stale_not_a_crash(clean: Conn) -> None:
    row = clean.execute("SELECT id FROM quiz_attempts ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    clean.execute("UPDATE quiz_attempts SET answers = '{\"q1\": 2}' WHERE id = %s", [row[0]])
    check = run_audit(clean).check("stale_stored_scores")
    assert (check.violations, check.examples) == (1, (str(row[0]),))


def test_orphans_are_found_in_a_uuid_column(dirty: Conn) -> None:
    dirty.execute("ALTER TABLE quiz_attempts ALTER video_id TYPE uuid USING video_id::uuid")
    check = run_audit(dirty).check("orphaned_quiz_attempts")
    assert (check.violations, check.examples) == (2, (quiz(2), quiz(3)))


def test_stale_scores_are_found_in_jsonb_answers(dirty: Conn) -> None:
    migrate(dirty, MIGRATE_JSONB)
    check = run_audit(dirty).check("stale_stored_scores")
    assert (check.violations, check.examples) == (3, (quiz(4), quiz(5), quiz(7)))


def test_checks_read_the_typed_columns_that_supersede_the_text(dirty: Conn) -> None:
    """After an expand (typed columns beside the text) and a contract (the text dropped),
    the checks read the typed columns: the same orphans and stale scores as in the text."""
    before = counts(run_audit(dirty))
    dirty.execute(
        "ALTER TABLE quiz_attempts ADD COLUMN video_uuid uuid, ADD COLUMN course_uuid uuid, "
        "ADD COLUMN questions_json jsonb, ADD COLUMN answers_json jsonb"
    )
    dirty.execute(
        "UPDATE quiz_attempts SET video_uuid = video_id::uuid, course_uuid = course_id::uuid, "
        "questions_json = questions::jsonb, answers_json = answers::jsonb"
    )
    dirty.execute(
        "ALTER TABLE quiz_attempts DROP COLUMN video_id, DROP COLUMN course_id, "
        "DROP COLUMN questions, DROP COLUMN answers"
    )
    report = run_audit(dirty)
    for name in ("orphaned_quiz_attempts", "stale_stored_scores"):
        check = report.check(name)
        assert check.applicable and check.violations == before[name] > 0, check
    assert "quiz_attempts.video_uuid -> videos" in report.check("missing_foreign_keys").examples


def test_checks_adapt_to_the_migrated_schema(dirty: Conn) -> None:
    migrate_fully(dirty)
    report = run_audit(dirty)
    assert counts(report) == {
        "orphaned_quiz_attempts": 0,
        "reflection_null_links": 0,
        "reflection_dangling_links": 0,
        "stale_stored_scores": 0,
        "voice_memo_metadata_in_text": 0,
        "malformed_voice_metadata": 2,
        "missing_foreign_keys": 0,
    }
    stale = report.check("stale_stored_scores")
    assert not stale.applicable
    assert stale.note == "score is computed, not stored"
    assert all(c.applicable for c in report.checks if c is not stale)
    assert "NULL audio_duration_seconds" in report.check("voice_memo_metadata_in_text").note
    assert report.check("malformed_voice_metadata").examples == (reflection(6), reflection(8))
    assert report.check("missing_foreign_keys").note == ""


def test_malformed_memos_flagged_in_a_column_are_accounted_for(dirty: Conn) -> None:
    migrate_fully(dirty)
    dirty.execute("ALTER TABLE reflections ADD COLUMN audio_header_status text")
    dirty.execute(
        "UPDATE reflections SET audio_header_status = 'malformed' WHERE id = %s", [reflection(6)]
    )
    report = run_audit(dirty)
    # The flagged memo is structured state; the unflagged one still needs fixing.
    assert report.check("malformed_voice_metadata").examples == (reflection(8),)
    assert report.check("voice_memo_metadata_in_text").violations == 0
    assert "accounted for" in report.check("malformed_voice_metadata").note


def test_patterns_capture_the_audio_metadata(dirty: Conn) -> None:
    migrate_fully(dirty)
    rows = dirty.execute(
        "SELECT audio_duration_seconds, audio_format, audio_size_bytes, audio_url "
        "FROM reflections WHERE id IN (%s, %s) ORDER BY id",
        [reflection(5), reflection(7)],
    ).fetchall()
    assert rows == [
        (135, "m4a", 1843 * 1024, V1_HEADER.rsplit(" ", 1)[1]),
        (135, "webm", round(1.8 * 1048576), V2_HEADER.rsplit(" ", 1)[1]),
    ]


@pytest.mark.parametrize(
    ("content", "v1", "v2"),
    [
        (f"{V1_HEADER}\ntranscript", True, False),
        (V1_HEADER, True, False),
        (f"{V2_HEADER}\ntranscript", False, True),
        (f"{V1_MALFORMED}\ntranscript", False, False),
        (f"{V2_MALFORMED}\ntranscript", False, False),
        (f"{V1_HEADER} trailing words\ntranscript", False, False),
        (f"Thoughts first\n{V2_HEADER}", False, False),
    ],
)
def test_patterns_agree_in_postgresql_and_python(
    clean: Conn, content: str, v1: bool, v2: bool
) -> None:
    row = clean.execute(
        "SELECT %s ~ %s, %s ~ %s",
        [content, VOICE_MEMO_V1_PATTERN, content, VOICE_MEMO_V2_PATTERN],
    ).fetchone()
    assert row == (v1, v2)
    assert bool(re.match(VOICE_MEMO_V1_PATTERN, content)) is v1
    assert bool(re.match(VOICE_MEMO_V2_PATTERN, content)) is v2


def test_not_valid_foreign_key_counts_as_missing(clean: Conn) -> None:
    clean.execute(
        "ALTER TABLE reflections ADD CONSTRAINT reflections_user_fk "
        "FOREIGN KEY (user_id) REFERENCES users NOT VALID"
    )
    check = run_audit(clean, sample_size=10).check("missing_foreign_keys")
    assert check.violations == 6
    assert check.note == "NOT VALID (counted as missing): reflections.user_id -> users"

    clean.execute("ALTER TABLE reflections VALIDATE CONSTRAINT reflections_user_fk")
    check = run_audit(clean, sample_size=10).check("missing_foreign_keys")
    assert check.violations == 5
    assert "reflections.user_id -> users" not in check.examples
    assert check.note == ""


def test_composite_foreign_key_does_not_count(clean: Conn) -> None:
    clean.execute("ALTER TABLE videos ADD UNIQUE (id, course_id)")
    clean.execute(
        "ALTER TABLE reflections ADD FOREIGN KEY (video_id, course_id) "
        "REFERENCES videos (id, course_id)"
    )
    assert run_audit(clean).check("missing_foreign_keys").violations == 6


def test_database_without_tables_has_only_inapplicable_checks(connect: ConnFactory) -> None:
    report = run_audit(connect())
    assert tuple(c.name for c in reference(report)) == CHECK_NAMES
    assert not any(c.applicable for c in reference(report))
    assert all(c.note and c.violations == 0 and c.examples == () for c in reference(report))
    assert report.schema_findings == 0  # no table: nothing for the generic checks either
    assert report.total_violations == 0
    assert report.check("orphaned_quiz_attempts").note == "table quiz_attempts does not exist"


def test_missing_table_disables_only_the_checks_that_need_it(dirty: Conn) -> None:
    dirty.execute("DROP TABLE reflections")
    report = run_audit(dirty, sample_size=10)
    applicable = {c.name for c in reference(report) if c.applicable}
    assert applicable == {"orphaned_quiz_attempts", "stale_stored_scores", "missing_foreign_keys"}
    fks = report.check("missing_foreign_keys")
    assert (fks.violations, fks.examples) == (3, ALL_FOREIGN_KEYS[:3])
    assert "not checked" in fks.note


def test_audit_leaves_no_transaction_open(connect: ConnFactory) -> None:
    conn = connect(autocommit=False)
    seed(conn, dirty=True)
    conn.commit()
    assert run_audit(conn).total_violations == 18
    assert conn.info.transaction_status == TransactionStatus.IDLE


def test_report_is_json_ready(dirty: Conn) -> None:
    report = run_audit(dirty)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["total_violations"] == report.total_violations
    names = [c["name"] for c in document["checks"] if c["group"] == "reference"]
    assert names == list(CHECK_NAMES)
    assert document["checks"][0]["examples"] == [quiz(2), quiz(3)]
    with pytest.raises(KeyError):
        report.check("no_such_check")
