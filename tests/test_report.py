"""compare, ab, report and trend on golden results (tests/data) and real databases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vpbench.cli.main import main
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.results.documents import SCHEMA_VERSION, read_document
from vpbench.server.target import ServerTarget

DATA = Path(__file__).parent / "data"
LEGACY, MIGRATED = DATA / "runs" / "legacy.json", DATA / "runs" / "migrated.json"
STEPS = DATA / "steps-tiny"
STEPS_V2 = DATA / "steps-v2"
"""a schema 2 steps run (one step rehearsed under traffic, its timeline thinned to 1 in 8)"""
PNG = b"\x89PNG\r\n\x1a\n"

Runner = Callable[..., tuple[int, str, str]]


@pytest.fixture
def vpbench(capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
        captured = capsys.readouterr()
        code = exit_info.value.code
        return (code if isinstance(code, int) else 0), captured.out, captured.err

    return run


def edited(
    tmp_path: Path, source: Path, name: str, change: Callable[[dict[str, Any]], object]
) -> Path:
    document = json.loads(source.read_text())
    change(document)
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def slow_down(factor: float, names: set[str] | None = None) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        for entry in document["entries"]:
            if names is None or entry["name"] in names:
                entry["samples_ns"] = [int(ns * factor) for ns in entry["samples_ns"]]
                for summary in entry["plan_summaries"].values():
                    summary["fingerprint"] = "0" * 16  # a plan change: a deterministic signal

    return change


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000, path


def test_compare_migrated_against_legacy(vpbench: Runner) -> None:
    code, out, _ = vpbench("compare", LEGACY, MIGRATED, "--json", "--fail-on", "target")
    document = json.loads(out)
    rows = {r["name"]: r for r in document["rows"]}
    assert document["paired_session"] is False
    # Migrated plans differ, so a large timing change is trusted even across runs.
    assert rows["long_memos_in_course"]["verdict"] == "faster"
    assert rows["long_memos_in_course"]["plan_changed"] is True
    assert code == (1 if any(r["target_met_new"] is False for r in rows.values()) else 0)
    code, out, _ = vpbench("compare", LEGACY, LEGACY)
    assert code == 0 and ("unchanged" in out or "inconclusive" in out)


def test_a_regression_fails_the_gate(vpbench: Runner, tmp_path: Path) -> None:
    slower = edited(tmp_path, MIGRATED, "slower.json", slow_down(1.6, {"video_header"}))
    code, out, _ = vpbench("compare", MIGRATED, slower, "--json")
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert rows["video_header"]["verdict"] == "slower"
    assert code == 1
    # Timing alone, without a plan or buffer change, is inconclusive for runs taken apart.
    timing_only = edited(tmp_path, MIGRATED, "timing.json", lambda d: [
        e.update(samples_ns=[int(ns * 1.6) for ns in e["samples_ns"]])
        for e in d["entries"] if e["name"] == "video_header"])  # fmt: skip
    code, out, _ = vpbench("compare", MIGRATED, timing_only, "--json")
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert rows["video_header"]["verdict"] == "inconclusive" and code == 0
    code, _, _ = vpbench("compare", MIGRATED, slower, "--threshold", "median:80%")
    assert code == 0


def test_compare_a_step_document_is_paired(vpbench: Runner) -> None:
    step = STEPS / "0003_video_page_indexes.json"
    code, out, _ = vpbench("compare", step, "--json")
    document = json.loads(out)
    assert document["paired_session"] is True
    assert {r["name"] for r in document["rows"]} >= {"video_page", "course_progress"}
    # One paired round of a tiny step (an old, version 1 document): no interval over
    # rounds, so no verdict, and the gate passes.
    assert {r["verdict"] for r in document["rows"]} == {"inconclusive"} and code == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such results file"),
        ("", "not a readable results file"),
        ('{"schema_version": 1, "kind": "run", "metadata": {}, "entr', "not a readable results"),
        ('{"kind": "run"}', "no schema_version"),
        ('{"schema_version": 99, "kind": "run"}', "newer than this vpbench reads"),
        (
            '{"schema_version": 1, "kind": "run", "metadata": {}}',
            "not a valid run document: entries: Field required",
        ),
    ],
)
def test_bad_results_files(
    vpbench: Runner, tmp_path: Path, content: str | None, message: str
) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    code, _, err = vpbench("compare", LEGACY, bad)
    assert code == 2 and message in err and str(bad) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_incomparable_and_disjoint_runs(vpbench: Runner, tmp_path: Path) -> None:
    other_seed = edited(
        tmp_path, MIGRATED, "seed.json", lambda d: d["metadata"]["seed"].update(seed=99)
    )
    code, _, err = vpbench("compare", LEGACY, other_seed)
    assert code == 2 and "not comparable: seed 1 vs 99" in err and "--force" in err
    # --force compares them as it compares the runs before the edit (one target missed: 1)
    assert (
        vpbench("compare", LEGACY, other_seed, "--force")[0]
        == vpbench("compare", LEGACY, MIGRATED)[0]
        == 1
    )
    renamed = edited(tmp_path, MIGRATED, "renamed.json", lambda d: [
        e.update(name="x_" + e["name"]) for e in d["entries"]])  # fmt: skip
    code, _, err = vpbench("compare", LEGACY, renamed)
    assert code == 2 and "no query or scenario in common" in err
    code, _, err = vpbench("compare", LEGACY, MIGRATED, "--threshold", "fast:5%")
    assert code == 2 and "invalid threshold" in err


def test_report_of_a_steps_folder(vpbench: Runner, tmp_path: Path) -> None:
    code, out, _ = vpbench("report", STEPS, "--out", tmp_path / "report")
    assert code == 0, out
    report = (tmp_path / "report" / "report.md").read_text()
    first = report.splitlines()[0]
    assert first.startswith("**6 migrations:**") and "video_page p95" in first
    assert "Biggest win" in first
    for image in ("steps-latency.png", "steps-cost.png", "steps-integrity.png"):
        assert f"]({image})" in report
        assert_png(tmp_path / "report" / image)
    assert report.count("### `00") == 6


def test_report_of_a_series_with_nothing_pending(vpbench: Runner, tmp_path: Path) -> None:
    """A copy of a database already at the series' end runs no step: its summary has none,
    and the report says so (it raised an IndexError, exit 70)."""
    summary = json.loads((STEPS / "summary.json").read_text())
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "summary.json").write_text(json.dumps(summary | {"steps": []}))
    code, _, err = vpbench("report", tmp_path / "series", "--out", tmp_path / "report")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.startswith("**0 migrations:** none was pending, so nothing was measured.")


def test_a_schema_2_step_is_upgraded_on_read(vpbench: Runner, tmp_path: Path) -> None:
    """Its stall mixed lock waits and contention: kept as ``stall_ms``, blocked and slowed
    unknown, its verdict as judged then; its report and timeline still draw."""
    raw = json.loads((STEPS_V2 / "0001_quiz_attempt_links.json").read_text())
    assert raw["schema_version"] == 2 and "longest_stall_ms" in raw["availability"]
    document = read_document(STEPS_V2 / "0001_quiz_attempt_links.json")
    assert document["schema_version"] == SCHEMA_VERSION
    found = document["availability"]
    assert found["stall_ms"] == raw["availability"]["longest_stall_ms"]
    assert found["blocked"] == {"read": None, "write": None}
    assert found["slowed"] == {"read": None, "write": None}
    assert found["passed"] is raw["availability"]["passed"]
    assert "longest_stall_ms" not in found and "worst" not in found
    assert all(len(row) == 5 for row in found["timeline"])
    code, out, err = vpbench("report", STEPS_V2, "--out", tmp_path / "report")
    assert code == 0, out + err
    report = (tmp_path / "report" / "report.md").read_text()
    table = report[report.index("### Under live traffic") :]
    row = next(line for line in table.splitlines() if line.startswith("| `0001_quiz"))
    assert row.startswith("| `0001_quiz_attempt_links` | n/a | n/a | 35 s |")
    assert "stalled reads" in row
    assert "written before lock waits and contention were told apart" in report
    assert_png(tmp_path / "report" / "timeline-0001_quiz_attempt_links.png")


def test_the_deploy_order_names_the_step_to_deploy_before(vpbench: Runner, tmp_path: Path) -> None:
    """An expand's deploy_before reads "..., before `STEP`" in the series table and the
    old-app table; its twin, the same run without it, names no step."""
    for later in ("0007_drop_retired_quiz_columns", ""):
        folder = tmp_path / (later or "none")
        folder.mkdir()
        step = json.loads((STEPS_V2 / "0001_quiz_attempt_links.json").read_text())
        step["checks"]["old_app"]["deploy_before"] = later
        (folder / "0001_quiz_attempt_links.json").write_text(json.dumps(step))
        summary = json.loads((STEPS_V2 / "summary.json").read_text())
        summary["steps"][0]["deploy_before"] = later
        (folder / "summary.json").write_text(json.dumps(summary))
        code, out, err = vpbench("report", folder, "--out", folder / "report")
        assert code == 0, out + err
        report = (folder / "report" / "report.md").read_text()
        named = "breaks the old app, before `0007_drop_retired_quiz_columns`"
        assert report.count(named) == (2 if later else 0)
        assert report.count("breaks the old app") >= 2


def test_writes_a_new_constraint_refused_are_told_apart_from_failures(
    vpbench: Runner, tmp_path: Path
) -> None:
    """Under live traffic, the writer's copies of rows a step now forbids are refused (class
    23): the report counts them in brackets, beside the requests that failed for another
    reason; its twin, the run as stored, has no refusal and no brackets."""
    failed = {"read error 42883": 12, "write error 42804": 9}
    for refused in ({"write error 23503": 1367, "write error 23514": 2}, {}):
        folder = tmp_path / ("refused" if refused else "as-stored")
        folder.mkdir()
        step = json.loads((STEPS_V2 / "0001_quiz_attempt_links.json").read_text())
        step["availability"]["failed"] = failed | refused
        (folder / "0001_quiz_attempt_links.json").write_text(json.dumps(step))
        (folder / "summary.json").write_text((STEPS_V2 / "summary.json").read_text())
        code, out, err = vpbench("report", folder, "--out", folder / "report")
        assert code == 0, out + err
        report = (folder / "report" / "report.md").read_text()
        table = report[report.index("### Under live traffic") :]
        row = next(line for line in table.splitlines() if line.startswith("| `0001_quiz"))
        cell = "| 21 (1,369 refused) |" if refused else "| 21 |"
        assert cell in row, row
        assert ("refused)" in row) is bool(refused)


def test_report_of_two_runs(vpbench: Runner, tmp_path: Path) -> None:
    code, _, _ = vpbench("report", LEGACY, MIGRATED, "--out", tmp_path / "r")
    assert code == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert report.startswith("**") and "targets met" in report.splitlines()[0]
    for image in ("before-after.png", "distribution.png"):
        assert_png(tmp_path / "r" / image)
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = vpbench("report", LEGACY, MIGRATED, "--out", blocker / "sub")
    assert code == 2 and "cannot write results" in err


def test_trend_flags_an_injected_step(vpbench: Runner, tmp_path: Path) -> None:
    history = tmp_path / "history"
    history.mkdir()
    for night in range(12):
        factor = 1.0 + 0.03 * ((night * 7) % 3 - 1) + (0.6 if night >= 8 else 0.0)

        def change(document: dict[str, Any], n: int = night, f: float = factor) -> None:
            document["metadata"]["timestamp"] = f"2026-11-{n + 1:02d}T02:00:00+00:00"
            for entry in document["entries"]:
                entry["samples_ns"] = [int(ns * f) for ns in entry["samples_ns"]]
                if entry["summary"]:
                    entry["summary"]["p95_ms"] *= f

        edited(history, MIGRATED, f"night-{night:02d}.json", change)
    code, out, _ = vpbench("trend", history, "--out", tmp_path / "trend")
    assert code == 0 and "change point" in out
    markdown = (tmp_path / "trend" / "trend.md").read_text()
    assert "2026-11-09" in markdown  # the first slow night
    assert_png(tmp_path / "trend" / "trend.png")


@pytest.mark.slow
def test_ab_on_two_databases(
    vpbench: Runner,
    target: ServerTarget,
    session_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"{session_prefix}_ab"
    seed_database(target, name, get_profile("tiny"), seed=4)
    monkeypatch.setenv("VPBENCH_DSN", target.conninfo)
    # B names the same database by DSN: an A/A session through both kinds of side.
    code, out, err = vpbench(
        "ab", DATA.parent.parent / "workloads" / "voice_memos.toml", "--a", name,
        "--b", target.for_database(name), "--rounds", "2", "--repeat", "3",
        "--out", tmp_path / "ab",
    )  # fmt: skip
    assert code == 0, err
    assert "(paired session)" in out
    (document,) = (tmp_path / "ab").iterdir()
    code, out, _ = vpbench("compare", document, "--json")
    rows = json.loads(out)["rows"]
    # A/A: a database against itself reads zero (and the gate passes)...
    assert len(rows) == 5 and {r["verdict"] for r in rows} <= {"unchanged", "inconclusive"}
    assert code == 0
    # ...and the same session with B's samples of one query 60% slower is a regression.
    slowed = edited(tmp_path, document, "slowed.json", lambda d: [
        e.update(samples_ns=[int(ns * 1.6) for ns in e["samples_ns"]])
        for e in d["after"] if e["name"] == "memos_for_video"])  # fmt: skip
    code, out, _ = vpbench("compare", slowed, "--json")
    verdicts = {r["name"]: r["verdict"] for r in json.loads(out)["rows"]}
    assert verdicts["memos_for_video"] == "slower" and code == 1
    # Stored verdicts are what every reader shows: mark one, and compare prints the mark...
    stored = json.loads(document.read_text())["verdicts"]
    assert set(stored["entries"]) == {r["name"] for r in rows}
    assert {r["name"]: r["reason"] for r in rows} == {
        n: j["reason"] for n, j in stored["entries"].items()
    }
    marked = edited(tmp_path, document, "marked.json", lambda d: d["verdicts"]["entries"][
        "memos_for_video"].update(reason="judged when the session ended"))  # fmt: skip
    code, out, _ = vpbench("compare", marked, "--json")
    reasons = {r["name"]: r["reason"] for r in json.loads(out)["rows"]}
    assert reasons["memos_for_video"] == "judged when the session ended"
    # ...unless the reader asks for another rule, which is judged afresh (twin).
    code, out, _ = vpbench("compare", marked, "--json", "--threshold", "p95:10%")
    reasons = {r["name"]: r["reason"] for r in json.loads(out)["rows"]}
    assert reasons["memos_for_video"] != "judged when the session ended"
