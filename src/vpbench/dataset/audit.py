"""Integrity checks of the learning-app data: how many rows are wrong, and which.

Every check adapts to the schema it finds, legacy or migrated: ids compared as text work for
``text`` and ``uuid`` columns, JSON is read through ``::jsonb`` whether it is stored as text
or ``jsonb``, and a check whose table or column is missing is reported as not applicable.
All checks run in one transaction, so they see one snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from vpbench.dataset.audit_result import AuditReport, CheckResult
from vpbench.dataset.checks_file import UserCheck
from vpbench.dataset.generic_checks import run_generic_checks
from vpbench.dataset.snapshot import row_counts, user_tables
from vpbench.errors import AuditError, UsageError
from vpbench.server.target import untracked

log = logging.getLogger(__name__)

VOICE_MEMO_V1_PATTERN = (
    r"^\[voice memo\] duration ([0-9]+):([0-5][0-9]) \| format ([a-z0-9]+) "
    r"\| size ([0-9]+) KB \| (https?://\S+)(?:\n|$)"
)
"""Older app versions' header; groups: minutes, seconds, format, size in KB, URL."""

VOICE_MEMO_V2_PATTERN = (
    r"^Voice memo \(([0-9]+)s, ([a-z0-9]+), ([0-9]+(?:\.[0-9]+)?) MB\): (https?://\S+)(?:\n|$)"
)
"""Newer app versions' header; groups: seconds, format, size in MB, URL."""

EXPECTED_FOREIGN_KEYS: tuple[tuple[str, str, str], ...] = (
    ("quiz_attempts", "user_id", "users"),
    ("quiz_attempts", "video_id", "videos"),
    ("quiz_attempts", "course_id", "courses"),
    ("reflections", "user_id", "users"),
    ("reflections", "video_id", "videos"),
    ("reflections", "course_id", "courses"),
)
"""(table, column, referenced table) of every link that should be a foreign key."""

SUPERSEDED_BY: Mapping[tuple[str, str], str] = {
    ("quiz_attempts", "video_id"): "video_uuid",
    ("quiz_attempts", "course_id"): "course_uuid",
    ("quiz_attempts", "questions"): "questions_json",
    ("quiz_attempts", "answers"): "answers_json",
}
"""Text columns whose typed column, added beside them by an expand (the reference 0001 and
0005), holds the value once it exists, and alone once a contract drops the text."""

_TABLES = ("users", "courses", "videos", "quiz_attempts", "reflections")
_QUIZ, _REFLECTIONS = sql.Identifier("quiz_attempts"), sql.Identifier("reflections")
_VIDEOS, _COURSES = sql.Identifier("videos"), sql.Identifier("courses")


@dataclass(frozen=True)
class _Schema:
    """The columns of the application tables visible through the search path."""

    columns: Mapping[str, frozenset[str]]

    def has(self, table: str, column: str) -> bool:
        return column in self.columns.get(table, frozenset())

    def current(self, table: str, column: str) -> str:
        """The column that holds this value: the typed one beside it, where there is one."""
        beside = SUPERSEDED_BY.get((table, column))
        return beside if beside and self.has(table, beside) else column

    def missing(self, needs: Mapping[str, tuple[str, ...]]) -> str:
        """Why a check needing these tables and columns cannot run, or "" if it can."""
        for table, columns in needs.items():
            if table not in self.columns:
                return f"table {table} does not exist"
            for column in columns:
                if not self.has(table, column):
                    return f"column {table}.{column} does not exist"
        return ""


def _read_schema(conn: psycopg.Connection[Any]) -> _Schema:
    rows = conn.execute(
        "SELECT t.name, a.attname FROM unnest(%s::text[]) AS t(name) "
        "JOIN pg_class c ON c.oid = to_regclass(t.name) "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped",
        [list(_TABLES)],
    ).fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set())
        if column is not None:
            columns[table].add(column)
    return _Schema({t: frozenset(c) for t, c in columns.items()})


def _not_applicable(name: str, description: str, note: str) -> CheckResult:
    return CheckResult(name, description, applicable=False, violations=0, examples=(), note=note)


def _count_rows(
    conn: psycopg.Connection[Any],
    name: str,
    description: str,
    violating: sql.Composable,
    sample_size: int,
    note: str = "",
) -> CheckResult:
    """Run ``violating`` (a query of the offending rows' ``id``) once: count and sample it."""
    query = sql.SQL(
        "WITH violation AS MATERIALIZED ({violating}) "
        "SELECT (SELECT count(*) FROM violation), "
        "ARRAY(SELECT id::text FROM violation ORDER BY id LIMIT {limit})"
    ).format(violating=violating, limit=sql.Literal(sample_size))
    row = conn.execute(query).fetchone()
    count, examples = (int(row[0]), tuple(row[1])) if row else (0, ())
    return CheckResult(name, description, True, count, examples, note)


def _orphaned_quiz_attempts(conn: psycopg.Connection[Any], schema: _Schema, n: int) -> CheckResult:
    name, description = "orphaned_quiz_attempts", "quiz attempts of no existing video"
    link = schema.current("quiz_attempts", "video_id")
    if why := schema.missing({"quiz_attempts": ("id", link), "videos": ("id",)}):
        return _not_applicable(name, description, why)
    video = sql.Identifier(link)
    violating = sql.SQL(
        "SELECT q.id FROM {quiz} q WHERE q.{video} IS NULL OR NOT EXISTS "
        "(SELECT FROM {videos} v WHERE v.id::text = q.{video}::text)"
    ).format(quiz=_QUIZ, videos=_VIDEOS, video=video)
    return _count_rows(conn, name, description, violating, n)


def _reflection_null_links(conn: psycopg.Connection[Any], schema: _Schema, n: int) -> CheckResult:
    name, description = "reflection_null_links", "reflections with a NULL video_id or course_id"
    if why := schema.missing({"reflections": ("id", "video_id", "course_id")}):
        return _not_applicable(name, description, why)
    violating = sql.SQL(
        "SELECT id FROM {reflections} WHERE video_id IS NULL OR course_id IS NULL"
    ).format(reflections=_REFLECTIONS)
    return _count_rows(conn, name, description, violating, n)


def _reflection_dangling_links(
    conn: psycopg.Connection[Any], schema: _Schema, n: int
) -> CheckResult:
    name = "reflection_dangling_links"
    description = "reflections whose video_id or course_id points at no row"
    needs = {"reflections": ("id", "video_id", "course_id"), "videos": ("id",), "courses": ("id",)}
    if why := schema.missing(needs):
        return _not_applicable(name, description, why)
    violating = sql.SQL(
        "SELECT r.id FROM {reflections} r WHERE "
        "(r.video_id IS NOT NULL AND NOT EXISTS "
        "(SELECT FROM {videos} v WHERE v.id::text = r.video_id::text)) OR "
        "(r.course_id IS NOT NULL AND NOT EXISTS "
        "(SELECT FROM {courses} c WHERE c.id::text = r.course_id::text))"
    ).format(reflections=_REFLECTIONS, videos=_VIDEOS, courses=_COURSES)
    return _count_rows(conn, name, description, violating, n)


def _stale_stored_scores(conn: psycopg.Connection[Any], schema: _Schema, n: int) -> CheckResult:
    name = "stale_stored_scores"
    description = "quiz attempts whose stored score, total or percentage disagree with the answers"
    questions = schema.current("quiz_attempts", "questions")
    answers = schema.current("quiz_attempts", "answers")
    if why := schema.missing({"quiz_attempts": ("id", questions, answers)}):
        return _not_applicable(name, description, why)
    if not schema.has("quiz_attempts", "score"):
        return _not_applicable(name, description, "score is computed, not stored")
    computed = {
        "score": sql.SQL("s.score"),
        "total": sql.SQL("t.total"),
        # An empty quiz scores 0 %, not NULL.
        "percentage": sql.SQL("coalesce(round(100.0 * s.score / nullif(t.total, 0), 2), 0)"),
    }
    stored = [c for c in computed if schema.has("quiz_attempts", c)]
    violating = sql.SQL(
        "SELECT q.id FROM {quiz} q "
        # OFFSET 0 keeps the subquery from being inlined: each document is parsed once.
        # A document that is not an array counts as no questions/answers (so: stale), not
        # as an error that would stop the whole audit.
        "CROSS JOIN LATERAL (SELECT q.{questions}::jsonb AS questions, "
        "q.{answers}::jsonb AS answers OFFSET 0) raw "
        "CROSS JOIN LATERAL (SELECT "
        "CASE WHEN jsonb_typeof(raw.questions) = 'array' THEN raw.questions ELSE '[]' END "
        "AS questions, "
        "CASE WHEN jsonb_typeof(raw.answers) = 'array' THEN raw.answers ELSE '[]' END "
        "AS answers) j "
        "CROSS JOIN LATERAL (SELECT jsonb_array_length(j.questions) AS total) t "
        "CROSS JOIN LATERAL (SELECT count(*) AS score FROM jsonb_array_elements(j.answers) a "
        "JOIN jsonb_array_elements(j.questions) qq ON qq->>'id' = a->>'question_id' "
        "WHERE a->'choice' = qq->'correct') s "
        "WHERE {mismatch}"
    ).format(
        quiz=_QUIZ,
        questions=sql.Identifier(questions),
        answers=sql.Identifier(answers),
        mismatch=sql.SQL(" OR ").join(
            sql.SQL("q.{} IS DISTINCT FROM {}").format(sql.Identifier(c), computed[c])
            for c in stored
        ),
    )
    note = "" if len(stored) == len(computed) else f"compared stored {', '.join(stored)} only"
    return _count_rows(conn, name, description, violating, n, note)


def _voice_memo_metadata_in_text(
    conn: psycopg.Connection[Any], schema: _Schema, n: int
) -> CheckResult:
    name = "voice_memo_metadata_in_text"
    description = "voice memos whose audio metadata is only available by parsing their text"
    if why := schema.missing({"reflections": ("id", "kind", "content")}):
        return _not_applicable(name, description, why)
    # A header in neither format holds no metadata to parse: malformed_voice_metadata
    # counts it, this check does not, so no memo is counted twice.
    condition: sql.Composable = sql.SQL("")
    note = "no audio_duration_seconds column: every parseable voice memo"
    if schema.has("reflections", "audio_duration_seconds"):
        condition += sql.SQL(" AND audio_duration_seconds IS NULL")
        note = "parseable voice memos with a NULL audio_duration_seconds"
    if schema.has("reflections", "audio_header_status"):
        condition += sql.SQL(" AND audio_header_status IS DISTINCT FROM 'malformed'")
    violating = _voice_memos("(content ~ {v1} OR content ~ {v2})", condition)
    return _count_rows(conn, name, description, violating, n, note)


def _malformed_voice_metadata(
    conn: psycopg.Connection[Any], schema: _Schema, n: int
) -> CheckResult:
    name = "malformed_voice_metadata"
    description = "voice memos whose metadata header matches neither known format, unflagged"
    if why := schema.missing({"reflections": ("id", "kind", "content")}):
        return _not_applicable(name, description, why)
    # Once a memo has structured metadata, or is flagged malformed in a queryable column,
    # its text header no longer matters.
    condition: sql.Composable = sql.SQL("")
    note = ""
    if schema.has("reflections", "audio_duration_seconds"):
        condition += sql.SQL(" AND audio_duration_seconds IS NULL")
    if schema.has("reflections", "audio_header_status"):
        condition += sql.SQL(" AND audio_header_status IS NULL")
        note = "memos flagged audio_header_status = 'malformed' are accounted for"
    violating = _voice_memos("content !~ {v1} AND content !~ {v2}", condition)
    return _count_rows(conn, name, description, violating, n, note)


def _voice_memos(header_test: str, condition: sql.Composable) -> sql.Composed:
    """Ids of the voice memos whose header passes ``header_test`` (``{v1}`` and ``{v2}``
    stand for the two known formats) and ``condition``."""
    return sql.SQL(
        "SELECT id FROM {reflections} WHERE kind = 'voice' AND " + header_test + "{condition}"
    ).format(
        reflections=_REFLECTIONS,
        v1=sql.Literal(VOICE_MEMO_V1_PATTERN),
        v2=sql.Literal(VOICE_MEMO_V2_PATTERN),
        condition=condition,
    )


def _missing_foreign_keys(conn: psycopg.Connection[Any], schema: _Schema, n: int) -> CheckResult:
    name = "missing_foreign_keys"
    description = "expected links without a validated single-column foreign key"
    expected = [(t, schema.current(t, c), ref) for t, c, ref in EXPECTED_FOREIGN_KEYS]
    unchecked = [
        f"{table}.{column} -> {ref}"
        for table, column, ref in expected
        if not schema.has(table, column) or ref not in schema.columns
    ]
    if len(unchecked) == len(expected):
        return _not_applicable(name, description, "the linked tables or columns do not exist")
    rows = conn.execute(
        "SELECT e.tbl, e.col, e.ref, coalesce(bool_or(k.convalidated), false), count(k.oid) "
        "FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS e(tbl, col, ref, i) "
        "LEFT JOIN pg_constraint k ON k.contype = 'f' AND cardinality(k.conkey) = 1 "
        "AND k.conrelid = to_regclass(e.tbl) AND k.confrelid = to_regclass(e.ref) "
        "AND k.conkey[1] = (SELECT a.attnum FROM pg_attribute a "
        "WHERE a.attrelid = k.conrelid AND a.attname = e.col AND NOT a.attisdropped) "
        "GROUP BY e.tbl, e.col, e.ref, e.i ORDER BY e.i",
        [list(field) for field in zip(*expected, strict=True)],
    ).fetchall()
    missing: list[str] = []
    not_valid: list[str] = []
    for table, column, ref, validated, constraints in rows:
        link = f"{table}.{column} -> {ref}"
        if link in unchecked or validated:
            continue
        missing.append(link)
        if constraints:
            not_valid.append(link)
    notes = []
    if not_valid:
        notes.append(f"NOT VALID (counted as missing): {', '.join(not_valid)}")
    if unchecked:
        notes.append(f"not checked (table or column missing): {', '.join(unchecked)}")
    return CheckResult(name, description, True, len(missing), tuple(missing[:n]), "; ".join(notes))


_CHECKS = (
    _orphaned_quiz_attempts,
    _reflection_null_links,
    _reflection_dangling_links,
    _stale_stored_scores,
    _voice_memo_metadata_in_text,
    _malformed_voice_metadata,
    _missing_foreign_keys,
)


def run_audit(
    conn: psycopg.Connection[Any],
    *,
    sample_size: int = 5,
    checks: Sequence[UserCheck] = (),
    count_rows: bool = False,
) -> AuditReport:
    """Run every check in one transaction: the reference schema's (not applicable where its
    tables or columns are missing), the generic ones that hold for any schema, then
    ``checks`` from a checks file; each result carries up to ``sample_size`` examples.
    ``count_rows``: also the rows of every table (``steps`` has them from its snapshots)."""
    if sample_size < 0:
        raise UsageError(f"sample size {sample_size}: must be 0 or more")
    results: list[CheckResult] = []
    try:
        with conn.transaction():
            untracked(conn)
            schema = _read_schema(conn)
            for check in _CHECKS:
                results.append(check(conn, schema, sample_size))
            results += run_generic_checks(conn, sample_size)
            results += [check.run(conn, sample_size) for check in checks]
            for result in results:
                log.debug("audit %s: %d violation(s)", result.name, result.violations)
            rows = row_counts(conn, user_tables(conn)) if count_rows else {}
    except psycopg.Error as exc:
        raise AuditError(f"audit failed: {exc}".strip(), sqlstate=exc.sqlstate) from exc
    return AuditReport(tuple(results), rows)
