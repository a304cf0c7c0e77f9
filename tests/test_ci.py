"""``vpbench ci pr`` and ``vpbench ci nightly`` end to end: real PostgreSQL and a local git
repository whose commits change a migration series."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest

from vpbench.cli.main import main
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.results.documents import read_document
from vpbench.server.target import ServerTarget
from vpbench.steps.nightly import chained_ratio, last_passed, stored_nights
from vpbench.steps.pull_request import MARKER

PROBE_WORKLOAD = """\
[params.video]
source = "SELECT id::text FROM videos ORDER BY id"
pool = 5

[queries.probe]
target_ms = 50
sql = "SELECT probe() FROM videos WHERE id = :video"
"""

FAST = "CREATE OR REPLACE FUNCTION probe() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
SLOW = (
    "CREATE OR REPLACE FUNCTION probe() RETURNS int LANGUAGE sql "
    "AS 'SELECT 1 FROM pg_sleep(0.005)';\n"
)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def step(repo: Path, name: str, up: str, down: str, toml: str = "") -> None:
    folder = repo / "migrations" / name
    folder.mkdir(parents=True)
    (folder / "up.sql").write_text(up)
    (folder / "down.sql").write_text(down)
    (folder / "migration.toml").write_text(f'title = "{name}"\n{toml}')


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, str | Path]:
    """A repository with a base commit and two heads: one that changes nothing measurable,
    one that makes the probe query sleep 5 ms."""
    root = tmp_path / "app"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    step(root, "0001_probe", FAST, "DROP FUNCTION probe();\n")
    (root / "workloads").mkdir()
    (root / "workloads" / "probe.toml").write_text(PROBE_WORKLOAD)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-qb", "slow")
    step(root, "0002_change", SLOW, FAST)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "slow")
    slow = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    step(root, "0002_change", "COMMENT ON FUNCTION probe() IS 'documented';\n",
         "COMMENT ON FUNCTION probe() IS NULL;\n")  # fmt: skip
    git(root, "add", "-A")
    git(root, "commit", "-qm", "documented")
    return {"root": root, "base": base, "slow": slow}


def ci_pr(target: ServerTarget, session_prefix: str, repo: dict[str, str | Path], out: Path,
          *extra: str) -> int:  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([
            "ci", "pr", "--base", str(repo["base"]), "--repo", str(repo["root"]),
            "--migrations-path", "migrations", "--profile", "tiny",
            "--rounds", "3", "--max-rounds", "3", "--repeat", "3", "--out", str(out),
            "--dsn", target.for_database(f"{session_prefix}_ci"), *extra,
        ])  # fmt: skip
    code = exit_info.value.code
    return code if isinstance(code, int) else 1


def test_a_pull_request_that_changes_nothing_passes_with_its_comment(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "pr"
    code = ci_pr(target, session_prefix, repo, out)  # head: the working tree ("documented")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = read_document(next(out.glob("*-ab-pr.json")))
    assert document["kind"] == "ab"
    assert document["labels"] == {
        "before": f"base {str(repo['base'])[:12]}",
        "after": "head working tree",
    }
    assert document["metadata"]["b_applied_migrations"] == ["0001_probe", "0002_change"]
    assert document["metadata"]["applied_migrations"] == ["0001_probe"]
    said = captured.err + captured.out
    assert said.count("seeding ") == 1  # one seed; the head's state is a copy of the base's
    comment = (out / "comment.md").read_text()
    assert comment.startswith(MARKER + "\n")
    assert "Every new migration passed; no regression." in comment
    # the head's new migration led the comment, run through steps from the base's state
    assert comment.index("### New migrations") < comment.index("### Final states")
    (row,) = [line for line in comment.splitlines() if line.startswith("| `0002_change`")]
    assert "| yes |" in row  # reversible
    assert (out / "steps" / "0002_change.json").is_file()
    timeline = out / "steps" / "report" / "timeline-0002_change.png"
    assert timeline.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    charts = re.findall(r"```mermaid\nxychart-beta\n(.*?)```", comment, re.S)
    assert len(charts) == 2
    for chart in charts:
        (axis,) = re.findall(r"x-axis (\[.*\])", chart)
        series = re.findall(r"(?:bar|line) \[(.*)\]", chart)
        assert axis == '["probe"]' and len(series) == 2
        assert all(len(values.split(",")) == 1 for values in series)
        assert all(re.fullmatch(r"\d+(\.\d+)?", v.strip()) for v in series)  # no exponent
    assert "![" not in comment  # the PNGs are in the report folder, not in the comment
    report = out / "report" / "report.md"
    assert f"report: {report}" in captured.out.replace("\n", "")
    assert (out / "report" / "before-after.png").is_file()
    assert "`probe`" in report.read_text()


@pytest.mark.slow
def test_a_pull_request_that_slows_a_query_fails_and_says_which(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "pr"
    code = ci_pr(target, session_prefix, repo, out, "--head", str(repo["slow"]))
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "head against base: 1 regression (probe)" in captured.err
    comment = (out / "comment.md").read_text()
    assert "**final states: 1 regression (probe)**" in comment
    assert "**slower**" in comment
    # --fail-on none: the same finding, reported, exit 0
    assert ci_pr(target, session_prefix, repo, tmp_path / "pr2", "--head", str(repo["slow"]),
                 "--fail-on", "none") == 0  # fmt: skip


def _head(repo: dict[str, str | Path], branch: str, *steps: tuple[str, ...]) -> str:
    """A branch off the base adding ``steps`` (name, up, down and migration.toml lines);
    its commit."""
    root = Path(repo["root"])
    git(root, "checkout", "-qb", branch, str(repo["base"]))
    for found in steps:
        step(root, *found)
    git(root, "add", "-A")
    git(root, "commit", "-qm", branch)
    commit = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    return commit


BLOCKING_INDEX = (
    "CREATE INDEX reflections_created_idx ON reflections (created_at);\nSELECT pg_sleep(3);\n"
)


@pytest.mark.slow
def test_a_new_migration_that_blocks_writes_fails_its_budget_and_says_so(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocking = _head(repo, "blocking", ("0002_index", BLOCKING_INDEX,
                                         "DROP INDEX reflections_created_idx;\n"))  # fmt: skip
    out = tmp_path / "blocking"
    code = ci_pr(target, session_prefix, repo, out, "--head", blocking, "--fail-on", "budget")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "0002_index fails budget: the app waited" in captured.err
    comment = (out / "comment.md").read_text()
    first = comment.splitlines()[3]
    assert first.startswith("**0002_index fails budget: the app waited ")
    (row,) = [line for line in comment.splitlines() if line.startswith("| `0002_index`")]
    assert "SHARE on reflections, 3." in row  # the lock and its hold
    timeline = comment.split("<details><summary>timeline of 0002_index</summary>")[1]
    timeline = timeline.split("</details>")[0]
    assert "```mermaid\ngantt\n" in timeline and "section locks the app waits for" in timeline
    (hold,) = re.findall(r"SHARE reflections : (\d+), (\d+)", timeline)
    assert int(hold[1]) - int(hold[0]) >= 3000  # held 3 s, in milliseconds
    blocked = re.search(r"\*\*(none|[\d.]+ ms|[\d.]+ s) / ([\d.]+) s \(budget 1.00 s\)\*\*", row)
    assert blocked and float(blocked[2]) >= 2.0, row  # writes waited about 3 s
    # the twin: the same index built CONCURRENTLY blocks no write
    concurrent = _head(repo, "concurrent", (
        "0002_index",
        "CREATE INDEX CONCURRENTLY reflections_created_idx ON reflections (created_at);\n",
        "DROP INDEX reflections_created_idx;\n",
        "transactional = false\n",
    ))  # fmt: skip
    code = ci_pr(target, session_prefix, repo, tmp_path / "concurrent", "--head", concurrent,
                 "--fail-on", "budget")  # fmt: skip
    assert code == 0, capsys.readouterr().err


@pytest.mark.slow
def test_a_new_migration_that_loses_a_row_on_down_is_not_reversible(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lossy = _head(repo, "lossy", (
        "0002_note", "ALTER TABLE videos ADD COLUMN note text;\n",
        "ALTER TABLE videos DROP COLUMN note;\n"
        "DELETE FROM videos WHERE id = (SELECT min(id) FROM videos);\n",
    ))  # fmt: skip
    out = tmp_path / "lossy"
    code = ci_pr(target, session_prefix, repo, out, "--head", lossy, "--fail-on", "reversible")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "0002_note fails reversible: not reversible: " in captured.err
    (row,) = [line for line in (out / "comment.md").read_text().splitlines()
              if line.startswith("| `0002_note`")]  # fmt: skip
    assert "| **no** |" in row
    # the same head passes a job that does not check reversibility
    code = ci_pr(target, session_prefix, repo, tmp_path / "lossy2", "--head", lossy,
                 "--fail-on", "budget")  # fmt: skip
    assert code == 0, capsys.readouterr().err


@pytest.mark.slow
def test_a_head_that_edits_an_applied_migration_is_flagged_and_one_without_new_ones_says_so(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = Path(repo["root"])
    git(root, "checkout", "-qb", "edited", str(repo["base"]))
    (root / "migrations" / "0001_probe" / "up.sql").write_text(FAST + "-- reworded\n")
    git(root, "commit", "-qam", "edit 0001")
    edited = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    out = tmp_path / "edited"
    code = ci_pr(target, session_prefix, repo, out, "--head", edited)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    comment = (out / "comment.md").read_text()
    assert "This pull request adds no migration: only the final states are compared." in comment
    assert re.search(r"- edited history: 0001_probe was edited after the base had it \(checksum "
                     r"[0-9a-f]{12} in the base, [0-9a-f]{12} in the head\)", comment)  # fmt: skip
    assert "edited history: 0001_probe" in captured.err
    assert not (out / "steps").exists()


def test_a_ref_without_the_migrations_folder_is_one_line(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ci", "pr", "--base", "no-such-ref", "--repo", str(repo["root"]),
              "--migrations-path", "migrations", "--out", str(tmp_path / "pr"),
              "--dsn", target.for_database(f"{session_prefix}_ci")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "cannot read migrations, workloads at 'no-such-ref'" in err[0]


@pytest.mark.slow
def test_nightly_is_paired_against_the_last_night_that_passed(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Night 1 (the base commit) against itself, night 2 (a commit that changes nothing
    measurable, from a copy of staging) against night 1, night 3 (a function made slower,
    the plan unchanged) against night 2: only night 3 has a verdict, paired, with its
    interval; a night that failed is no one's base; the ratio chains across nights."""
    root, history, out = Path(repo["root"]), tmp_path / "history", tmp_path / "nightly"
    source = f"{session_prefix}_nightly_src"
    # An application-layer version, measured each night like the rest (untracked: the same
    # file on every commit checked out).
    (root / "workloads" / "probe_app.py").write_text(
        "def probe(conn, params):\n"
        "    conn.execute('SELECT probe() FROM videos WHERE id = %s::uuid',\n"
        "                 [params['video']]).fetchall()\n"
    )
    (root / "workloads" / "probe_app.toml").write_text(
        PROBE_WORKLOAD.replace("queries.probe", "queries.probe_app") + 'app = "probe_app:probe"\n'
    )
    seed_database(target, source, get_profile("tiny"), seed=1)

    def night(ref: str, *extra: str) -> tuple[int, str]:
        git(root, "checkout", "-q", ref)
        with pytest.raises(SystemExit) as exit_info:
            main([
                "ci", "nightly", "--repo", str(root), "--migrations-path", "migrations",
                "--profile", "tiny", "--rounds", "3", "--max-rounds", "3", "--repeat", "3",
                "--history", str(history), "--out", str(out),
                "--dsn", target.for_database(f"{session_prefix}_nightly"), *extra,
            ])  # fmt: skip
        captured = capsys.readouterr()
        code = exit_info.value.code
        return (code if isinstance(code, int) else 1), captured.out + captured.err

    code, said = night(str(repo["base"]))
    assert code == 0 and "first night: measured against itself" in said, said
    code, said = night("main", "--from", source)
    assert code == 0 and "(paired session)" in said, said
    code, said = night(str(repo["slow"]))
    assert code == 1 and "probe" in said and "regression" in said, said
    first, second, third = stored_nights(history)
    assert (first.base, second.base, third.base) == (None, first.id, second.id)
    assert (first.passed, second.passed, third.passed) == (True, True, False)
    assert last_passed(history) == second  # a failed night is no one's base
    verdicts = [
        read_document(n.path)["verdicts"]["entries"]["probe"] for n in (first, second, third)
    ]
    # The first night against itself and the unchanged second read no change.
    assert {verdicts[0]["verdict"], verdicts[1]["verdict"]} <= {"unchanged", "inconclusive"}
    assert verdicts[2]["verdict"] == "slower" and verdicts[2]["ci_low"] > 1  # its interval
    assert verdicts[2]["ratio"] > 3  # 5 ms of sleep on a sub-millisecond query
    app = [read_document(n.path)["verdicts"]["entries"]["probe_app[app]"]
           for n in (first, second, third)]  # fmt: skip
    assert {app[0]["verdict"], app[1]["verdict"]} <= {"unchanged", "inconclusive"}
    assert app[2]["verdict"] == "slower" and app[2]["ci_low"] > 1, str(app)
    chained = chained_ratio(history, "probe", first.id, third.id)
    assert chained == pytest.approx(verdicts[1]["ratio"] * verdicts[2]["ratio"])
    assert chained_ratio(history, "probe", third.id, first.id) is None  # not a later night
    with psycopg.connect(target.for_database(source)) as conn:  # only read
        assert conn.execute("SELECT to_regclass('vpbench.migrations')").fetchone() == (None,)
    assert (out / "compare" / "report.md").is_file()
    trend = (out / "trend" / "trend.md").read_text()
    assert trend.startswith("**3 runs,") and (out / "trend" / "trend.png").is_file()


REWRITE_SEEN_AT = (
    "0002_seen_at",
    "ALTER TABLE reflections ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp();\n",
    "ALTER TABLE reflections DROP COLUMN seen_at;\n",
    'max_stall = "10s"\ndowntime = "rewrites reflections"\n',
)
"""a table rewrite, declared with a 10 s stall budget"""


@pytest.mark.slow
def test_a_new_migration_fine_on_the_copy_is_predicted_over_its_budget_in_production(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A table rewrite within its 10 s on `small` is minutes at 50M rows: with --rows the
    new migration runs again at `tiny`, is predicted, and --fail-on budget fails on it."""
    rewrite = _head(repo, "rewrite", REWRITE_SEEN_AT)
    out = tmp_path / "rewrite"
    code = ci_pr(target, session_prefix, repo, out, "--head", rewrite, "--profile", "small",
                 "--rows", "reflections=50M", "--fail-on", "budget")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "0002_seen_at fails budget: at production size: 0002_seen_at at 50.0M reflections" in (
        captured.err.replace("\n", " "))  # fmt: skip
    comment = (out / "comment.md").read_text()
    assert "### At production size (reflections=50,000,000)" in comment
    (row,) = [line for line in comment.splitlines() if line.startswith("| `0002_seen_at` | ~")]
    # the longest downtime predicted: the lock's hold, or the stall it causes under traffic
    assert re.search(r"\| (ACCESS EXCLUSIVE on reflections|longest stall of the app): ~", row)
    assert (out / "steps-smaller" / "0002_seen_at.json").is_file()
    # the twin, on the same two runs (so only the size differs): at the size it ran, the same
    # migration is within its budget, and at 50M `predict` judges it as ci pr did
    runs = [str(out / "steps-smaller"), str(out / "steps")]
    for rows, expected in (("reflections=40000", 0), ("reflections=50M", 1)):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *runs, "--rows", rows, "--fail-on", "budget"])
        assert exit_info.value.code == expected, capsys.readouterr().err


@pytest.mark.slow
def test_a_profile_without_a_smaller_one_says_so_instead_of_predicting(
    target: ServerTarget, session_prefix: str, repo: dict[str, str | Path], tmp_path: Path
) -> None:
    """tiny has no smaller profile to fit with: said in the comment, not guessed."""
    rewrite = _head(repo, "rewrite", REWRITE_SEEN_AT)
    code = ci_pr(target, session_prefix, repo, tmp_path / "tiny", "--head", rewrite,
                 "--rows", "reflections=50M")  # fmt: skip
    assert code == 0
    assert "No prediction at production size: profile tiny has no smaller one to fit with" in (
        (tmp_path / "tiny" / "comment.md").read_text())  # fmt: skip


@pytest.mark.slow
def test_a_new_migration_that_fails_names_its_file_in_the_repository(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = _head(repo, "broken", ("0002_broken", "SELECT 1;\nCREATE INDEX i ON videos (nope);\n",
                                     "DROP INDEX i;\n"))  # fmt: skip
    code = ci_pr(target, session_prefix, repo, tmp_path / "broken", "--head", broken)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"vpbench: error: {broken[:12]}:migrations/0002_broken/up.sql:2: ")
    assert 'column "nope" does not exist' in err[-1]
    comment = (tmp_path / "broken" / "comment.md").read_text()  # the reviewer is told too
    assert comment.startswith(MARKER) and "**A new migration failed to apply: " in comment
    assert f"{broken[:12]}:migrations/0002_broken/up.sql:2: " in comment


@pytest.mark.slow
def test_a_new_migration_that_deletes_rows_fails_integrity(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deleting = _head(repo, "deleting", (
        "0002_tidy", "DELETE FROM reflections WHERE id IN "
        "(SELECT id FROM reflections ORDER BY id LIMIT 3);\n", "SELECT 1;\n",
    ))  # fmt: skip
    code = ci_pr(target, session_prefix, repo, tmp_path / "deleting", "--head", deleting,
                 "--fail-on", "integrity")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "0002_tidy fails integrity: rows lost: reflections 3" in err


@pytest.mark.slow
def test_a_new_migration_that_breaks_the_deployed_app_fails_old_app(
    target: ServerTarget,
    session_prefix: str,
    repo: dict[str, str | Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The head renames the function the deployed app calls and brings a variant calling the
    new name: its own queries work, the app deployed before it breaks, undeclared."""
    renaming = _head(repo, "renaming", (
        "0002_rename", "ALTER FUNCTION probe() RENAME TO probe_v2;\n",
        "ALTER FUNCTION probe_v2() RENAME TO probe;\n",
    ))  # fmt: skip
    root = Path(repo["root"])
    git(root, "checkout", "-q", "renaming")
    workload = root / "workloads" / "probe.toml"
    variant = ('\n[[queries.probe.variants]]\nfrom = "0002_rename"\n'
               'sql = "SELECT probe_v2() FROM videos WHERE id = :video"\n')  # fmt: skip
    workload.write_text(workload.read_text() + variant)
    git(root, "commit", "-qam", "variant")
    renaming = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    code = ci_pr(target, session_prefix, repo, tmp_path / "renaming", "--head", renaming,
                 "--fail-on", "old-app")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "0002_rename fails old-app: breaks the deployed app (probe" in err
    (row,) = [line for line in (tmp_path / "renaming" / "comment.md").read_text().splitlines()
              if line.startswith("| `0002_rename`")]  # fmt: skip
    assert "| **breaks the old app" in row
