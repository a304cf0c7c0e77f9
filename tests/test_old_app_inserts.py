"""The old app's INSERT on the new schema: a probe row that holds data a new constraint now
forbids (legacy dirt) is a refusal, as under live traffic, not a break of the app; an
INSERT the new schema cannot take at all is."""

from __future__ import annotations

import psycopg

from test_steps import TINY
from vpbench.dataset.seed import seed_database
from vpbench.server.backup import copy_database
from vpbench.server.target import ServerTarget
from vpbench.steps.compatibility import check_old_app

NOT_NULL_COURSE = """
UPDATE reflections SET course_id = (SELECT min(id::text)::uuid FROM courses)
WHERE course_id IS NULL;
ALTER TABLE reflections ALTER COLUMN course_id SET NOT NULL;
"""


def _inserts(target: ServerTarget, before: str, after: str) -> tuple[str, tuple[str, ...]]:
    with (
        psycopg.connect(target.for_database(before), autocommit=True) as old,
        psycopg.connect(target.for_database(after), autocommit=True) as new,
    ):
        found = check_old_app(old, new, [], {}, (), ())
    (reflections,) = [i for i in found.inserts if i.table == "reflections"]
    return reflections.result, found.old_app_breaks


def _states(
    target: ServerTarget, name: str, before_sql: tuple[str, ...], after_sql: tuple[str, ...]
) -> tuple[str, str]:
    """A seeded tiny database changed by ``before_sql``, and its copy then changed by
    ``after_sql``: the states before and after a step."""
    before, after = f"{name}_a", f"{name}_b"

    def run(database: str, statements: tuple[str, ...]) -> None:
        with psycopg.connect(target.for_database(database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    seed_database(target, before, TINY, seed=4)
    run(before, before_sql)
    copy_database(target, before, after)
    run(after, after_sql)
    return before, after


def test_a_refused_probe_row_is_not_a_break_but_a_schema_that_refuses_all_is(
    target: ServerTarget, session_prefix: str
) -> None:
    # Half the reflections lose their course; CLUSTER interleaves them with the others again
    # (the probe rows are drawn from a page sample, in id order).
    before, after = _states(
        target,
        f"{session_prefix}_oldapp",
        (
            "UPDATE reflections SET course_id = NULL WHERE right(id::text, 1) < '8'",
            "CLUSTER reflections USING reflections_pkey",
        ),
        (NOT_NULL_COURSE,),
    )
    result, breaks = _inserts(target, before, after)
    assert result.startswith("works; refused") and "not-null" in result, result
    assert not any(b.startswith("INSERT INTO reflections") for b in breaks), breaks
    # Twins: every probe row refused, and an INSERT the new schema cannot parse.
    with psycopg.connect(target.for_database(before), autocommit=True) as conn:
        conn.execute("UPDATE reflections SET course_id = NULL")
    result, breaks = _inserts(target, before, after)
    assert result.startswith("fails: every probe row refused")
    assert any(b.startswith("INSERT INTO reflections: fails") for b in breaks)
    with psycopg.connect(target.for_database(after), autocommit=True) as conn:
        conn.execute("ALTER TABLE reflections DROP COLUMN kind")
    result, _ = _inserts(target, before, after)
    assert result.startswith("fails: column") and "kind" in result, result


def test_a_column_the_app_retired_may_be_dropped(target: ServerTarget, session_prefix: str) -> None:
    """An expand step marks the column it supersedes ``retired:``: the app deployed after it
    no longer writes the column, so the step that drops it leaves that app working."""
    before, after = _states(
        target,
        f"{session_prefix}_retired",
        (
            "ALTER TABLE reflections ADD COLUMN mood text",
            "COMMENT ON COLUMN reflections.mood IS 'retired: superseded by feeling'",
        ),
        ("ALTER TABLE reflections DROP COLUMN mood",),
    )
    result, breaks = _inserts(target, before, after)
    assert result == "works" and not breaks, (result, breaks)
    # Twin: not retired, the app still writes it, and its INSERT fails once it is gone.
    with psycopg.connect(target.for_database(before), autocommit=True) as conn:
        conn.execute("COMMENT ON COLUMN reflections.mood IS 'how the writer felt'")
    result, breaks = _inserts(target, before, after)
    assert result.startswith("fails: column") and "mood" in result, result
    assert any(b.startswith("INSERT INTO reflections: fails") for b in breaks)
