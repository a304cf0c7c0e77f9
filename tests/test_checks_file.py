"""Integrity checks beyond the reference schema's: generic ones that hold for any schema
(read from the catalog) and a team's own, from a checks file."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from conftest import DatabaseFactory
from test_steps import QUICK, REFERENCE, TINY
from vpbench.dataset.audit import run_audit
from vpbench.dataset.checks_file import ChecksFileError, load_checks
from vpbench.dataset.seed import seed_database
from vpbench.reporting.markdown import build_report
from vpbench.server.target import ServerTarget
from vpbench.steps.pipeline import run_steps

ORPHANS = """\
# A team's own checks.
[checks.orphaned_attempts]
description = "quiz attempts of no video"
sql = '''SELECT count(*) FROM quiz_attempts q
         WHERE NOT EXISTS (SELECT FROM videos v WHERE v.id::text = q.video_id::text)'''
examples = '''SELECT q.id FROM quiz_attempts q
              WHERE NOT EXISTS (SELECT FROM videos v WHERE v.id::text = q.video_id::text)
              ORDER BY 1'''

[checks.users_without_email]
sql = "SELECT count(*) FROM users WHERE email = ''"
"""

GENERIC_MESS = """
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int);
CREATE TABLE log (at timestamptz, line text);
INSERT INTO parent VALUES (1), (2);
INSERT INTO child VALUES (1, 1), (2, 1), (3, 2);
ALTER TABLE child ADD CONSTRAINT child_parent_fkey FOREIGN KEY (parent_id)
    REFERENCES parent (id) NOT VALID;
"""


def generic(conn: psycopg.Connection[object]) -> dict[str, tuple[int, tuple[str, ...]]]:
    report = run_audit(conn)
    return {c.name: (c.violations, c.examples) for c in report.checks if c.group == "generic"}


def test_generic_checks_find_what_any_schema_can_get_wrong(
    create_database: DatabaseFactory,
) -> None:
    conninfo = create_database("generic")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(GENERIC_MESS)
        # A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index behind.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY child_parent_idx ON child (parent_id)")
        found = generic(conn)
        assert found == {
            "not_valid_constraints": (1, ("child.child_parent_fkey",)),
            "invalid_indexes": (1, ("child_parent_idx",)),
            "unindexed_foreign_keys": (1, ("child.child_parent_fkey",)),
            "tables_without_primary_key": (1, ("log",)),
        }
        report = run_audit(conn)
        assert report.schema_findings == 4 and report.total_violations == 0
        # The twin: each finding fixed, each check reads zero.
        conn.execute("ALTER TABLE child VALIDATE CONSTRAINT child_parent_fkey")
        conn.execute("DROP INDEX child_parent_idx")
        # a partial index cannot find every child of a deleted parent: still unindexed
        conn.execute("CREATE INDEX child_some_parents_idx ON child (parent_id) WHERE id > 1")
        assert generic(conn)["unindexed_foreign_keys"] == (1, ("child.child_parent_fkey",))
        conn.execute("CREATE INDEX child_parent_id_idx ON child (parent_id, id)")
        conn.execute("ALTER TABLE log ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY "
                     "PRIMARY KEY")  # fmt: skip
        assert {name: count for name, (count, _) in generic(conn).items()} == dict.fromkeys(
            found, 0
        )


def test_a_teams_checks_run_in_the_audit_and_fail_it(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    name = f"{session_prefix}_checks"
    seed_database(target, name, TINY, seed=8)
    checks_file = tmp_path / "checks.toml"
    checks_file.write_text(ORPHANS)
    checks = load_checks(checks_file)
    assert [(c.name, c.line) for c in checks] == [("orphaned_attempts", 2),
                                                  ("users_without_email", 10)]  # fmt: skip
    with psycopg.connect(target.for_database(name)) as conn:
        report = run_audit(conn, checks=checks)
        reference = report.check("orphaned_quiz_attempts")
    ours = report.check("orphaned_attempts")
    assert ours.group == "yours" and ours.violations == reference.violations > 0
    assert ours.examples == reference.examples  # the same rows, first ids in order
    assert report.check("users_without_email").violations == 0
    failing = _cli("audit", "--db", name, "--checks", str(checks_file), "--fail-on-violations",
                   dsn=target.conninfo)  # fmt: skip
    assert failing.returncode == 1 and "orphaned_attempts" in failing.stdout, failing.stderr
    clean = tmp_path / "clean.toml"
    clean.write_text(
        "[checks.users_without_email]\nsql = \"SELECT count(*) FROM users WHERE email = ''\"\n"
    )
    passing = _cli("audit", "--db", name, "--checks", str(clean), "--fail-on-violations",
                   "--json", dsn=target.conninfo)  # fmt: skip
    assert passing.returncode == 0, passing.stderr  # with --checks, yours decide
    assert '"group": "yours"' in passing.stdout
    document = json.loads(passing.stdout)
    assert document["rows"]["users"] == 300 and document["rows"]["quiz_attempts"] > 0


@pytest.mark.slow
def test_steps_report_a_teams_checks_per_state(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    checks_file = tmp_path / "checks.toml"
    checks_file.write_text(ORPHANS)
    result = run_steps(
        target, f"{session_prefix}_checks_steps", profile=TINY, seed=8,
        workload_paths=[REFERENCE / "video_page.toml"], out_dir=tmp_path / "out",
        to="0001_quiz_attempt_links", options=replace(QUICK, checks=load_checks(checks_file)),
    )  # fmt: skip
    (step,) = result.steps
    before, after = (
        step.audit_before.check("orphaned_attempts"),
        step.audit_after.check("orphaned_attempts"),
    )
    assert before.violations > 0 and len(before.examples) == 5 and after.violations == 0
    assert step.quarantined["quiz_attempts"] == before.violations
    report = build_report([tmp_path / "out"], tmp_path / "out").read_text()
    assert "### Your checks per state" in report
    assert (
        f"| orphaned_attempts | {before.violations:,} (e.g. `{before.examples[0]}`) | 0 |" in report
    )
    # 0001's foreign keys on quiz_attempts have no index yet: a generic schema finding.
    assert "unindexed foreign keys: quiz_attempts.quiz_attempts_course_uuid_fkey" in report


BAD_FILES = [
    ("[checks.broken]\nsql = \"SELEC count(*) FROM users\"\n",
     "1: checks.broken.sql does not parse"),
    ("[checks.deletes]\nsql = \"DELETE FROM users\"\n", "1: checks.deletes.sql must be one SELECT"),
    ("\n[checks.typo]\nsq = \"SELECT 1\"\n", "2: checks.typo has unknown key 'sq'"),
    ("[checks.two]\nsql = \"SELECT 1, 2\"\n", "1: check two: its sql must return one count"),
    ("[checks.words]\nsql = \"SELECT 'many'\"\n", "1: check words: its sql must return one count"),
    ("[checks.rows]\nsql = \"SELECT count(*) FROM (VALUES (1), (2)) v(x) GROUP BY x\"\n",
     "1: check rows: its sql must return one count"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_a_bad_checks_file_is_one_line_with_its_line(
    create_database: DatabaseFactory, tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "checks.toml"
    path.write_text(text)
    done = _cli(
        "audit",
        "--checks",
        str(path),
        dsn=create_database(f"bad_{BAD_FILES.index((text, expected))}"),
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"{path}:{expected}" in lines[0]
    if "does not parse" in expected or "SELECT" in expected or "unknown" in expected:
        with pytest.raises(ChecksFileError):
            load_checks(path)


def _cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run([sys.executable, "-m", "vpbench", *args], capture_output=True,
                          text=True, env={**env, "VPBENCH_DSN": dsn}, check=False)  # fmt: skip


@pytest.mark.slow
def test_steps_fail_on_violations_of_your_checks_in_the_final_state(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    """Exit 1 when a check of yours still finds violations where the series ends; its twin,
    a check the series leaves clean (orphans are quarantined by 0001), exits 0."""
    still = tmp_path / "still.toml"
    still.write_text('[checks.videos_exist]\nsql = "SELECT count(*) FROM videos"\n')
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(ORPHANS)
    said = {}
    for checks, expected in ((still, 1), (fixed, 0)):
        done = _cli("steps", "--profile", "tiny", "--db", f"{session_prefix}_fail_checks",
                    "--to", "0001_quiz_attempt_links", "--rounds", "2", "--max-rounds", "2",
                    "--repeat", "2", "--no-traffic", "--no-report", "--checks", str(checks),
                    "--fail-on-violations", "--out", str(tmp_path / checks.stem),
                    dsn=target.conninfo)  # fmt: skip
        assert done.returncode == expected, done.stderr
        said[checks.stem] = " ".join(done.stderr.split())
    assert "the series ends with 48 violation(s) of your data checks" in said["still"]
