"""``vpbench predict`` on step documents of one series run at three sizes on the test
server: a table rewrite is fitted on the two smaller ones and its prediction checked on the
third; a catalog-only step stays constant; the rows can come from a server's catalog, read
by a role that may read no table; bad input is one line, exit 2."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from test_steps import HEADER_WORKLOAD, QUICK, add_migration
from vpbench.analysis.prediction import SeriesRun, predict_series, read_series_run
from vpbench.cli.main import main
from vpbench.dataset.profiles import get_profile
from vpbench.results.documents import read_shaped
from vpbench.results.shapes import StepShape
from vpbench.server.target import ServerTarget
from vpbench.steps.pipeline import run_steps

pytestmark = pytest.mark.slow

SIZES = {"4k": 4_000, "32k": 32_000, "96k": 96_000}
"""the two fitted 8x apart (so that growth stands out of a loaded machine's noise), the
third 3x beyond them"""
REWRITE = "0001_rewrite_quiz_attempts"
CATALOG_ONLY = "0002_nullable_column"


def _predict(*args: str) -> int:
    """``vpbench predict ARGS`` through the real entry point: its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *args])
    return int(exit_info.value.code or 0)


def _series(folder: Path) -> Path:
    add_migration(
        folder,
        REWRITE,
        # a volatile default: every row is written again, under ACCESS EXCLUSIVE
        "ALTER TABLE quiz_attempts ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp();",
        "ALTER TABLE quiz_attempts DROP COLUMN seen_at;",
        'max_stall = "10s"\ndowntime = "rewrites quiz_attempts"\n',
    )
    add_migration(
        folder,
        CATALOG_ONLY,
        "ALTER TABLE reflections ADD COLUMN mood text;",
        "ALTER TABLE reflections DROP COLUMN mood;",
    )
    return folder


@pytest.fixture(scope="module")
def runs(
    target: ServerTarget, session_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The series run at each size, its results folder by size."""
    root = tmp_path_factory.mktemp("predict")
    migrations = _series(root / "migrations")
    workload = root / "header.toml"
    workload.write_text(HEADER_WORKLOAD)
    tiny = get_profile("tiny")
    folders = {}
    for name, quiz_attempts in SIZES.items():
        profile = dataclasses.replace(
            tiny, name=name, quiz_attempts=quiz_attempts, reflections=quiz_attempts // 2
        )
        run_steps(target, f"{session_prefix}_predict_{name}", profile=profile, seed=5,
                  workload_paths=[workload], migrations_dir=migrations,
                  out_dir=root / name, options=QUICK)  # fmt: skip
        folders[name] = root / name
    return folders


def test_a_rewrite_is_predicted_on_a_larger_size_and_a_catalog_change_stays_constant(
    runs: dict[str, Path],
) -> None:
    fitted = [read_series_run(runs["4k"]), read_series_run(runs["32k"])]
    larger = read_series_run(runs["96k"])
    rows = larger.steps[REWRITE].touched["quiz_attempts"]
    assert rows >= fitted[1].steps[REWRITE].touched["quiz_attempts"] * 3
    prediction = predict_series(fitted, {"quiz_attempts": rows}, "test", measured=larger)
    rewrite, catalog = prediction.steps
    figures = {f.key: f for f in rewrite.figures}
    duration = figures["duration"]
    assert duration.predicted is not None and duration.measured is not None
    assert "constant" not in duration.predicted.models
    small, large = sorted(duration.points, key=lambda p: p.rows)
    assert duration.predicted.value > large.value > small.value  # grows with the rows
    assert duration.predicted.contains(duration.measured), (duration.predicted, duration.measured)
    lock = figures["lock AccessExclusiveLock on quiz_attempts"]
    assert lock.predicted is not None and lock.measured is not None
    assert lock.predicted.contains(lock.measured)
    wal = figures["wal"]
    assert wal.predicted is not None and wal.measured is not None
    assert wal.predicted.contains(wal.measured) and abs(wal.error or 1) < 0.35
    # the catalog-only step: constant, not scaled with its table
    assert catalog.touched.keys() == {"reflections"}
    hold = next(f for f in catalog.figures if f.key == "lock AccessExclusiveLock on reflections")
    assert hold.predicted is not None and hold.predicted.models == ("constant",)
    assert hold.predicted.high < 0.5
    assert catalog.verdict == "within"


def test_the_budget_verdict_flips_with_the_budget(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = [str(runs["4k"]), str(runs["32k"])]
    # 50M quiz attempts: a rewrite of minutes, over the 10 s its migration.toml allows
    code = _predict(*folders, "--rows", "quiz_attempts=50M", "--fail-on", "budget",
                 "--out", str(tmp_path / "report"))  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1, captured.err
    said = captured.out.replace("\n", " ")
    assert f"{REWRITE} at 50.0M quiz_attempts: " in said
    assert re.search(r"(ACCESS EXCLUSIVE on quiz_attempts|longest stall of the app) for ~[\d.]+ "
                     r"(min|h) \[[\d.]+, [\d.]+\] \((\d+x the largest run|more WAL than "
                     r"max_wal_size \(\w+\), which no run wrote): a lower bound"
                     r"(; bounded: [^)]*)?\) — "
                     r"over its 10.0 s budget \(its max_stall\)", said)  # fmt: skip
    assert f"1 step(s) predicted over their stall budget: {REWRITE}" in captured.err
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"## `{REWRITE}`" in report and "| ACCESS EXCLUSIVE on quiz_attempts |" in report
    chart = tmp_path / "report" / f"growth-{REWRITE}.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the twin: 32k quiz attempts, a size it measured, well within it
    code = _predict(*folders, "--rows", "quiz_attempts=32000", "--fail-on", "budget")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "lower bound" not in captured.out  # at a size it measured
    # and the same 50M with a budget of an hour
    code = _predict(*folders, "--rows", "quiz_attempts=50M", "--max-stall", "60m",
                 "--fail-on", "budget")  # fmt: skip
    assert code == 0, capsys.readouterr().err


@pytest.fixture
def catalog_reader(target: ServerTarget, session_prefix: str) -> Iterator[str]:
    """A DSN of a role that can connect to a copy of the 96k database and read no table."""
    role = f"{session_prefix}_catalog_reader"
    database = f"{session_prefix}_predict_96k"
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield make_conninfo(target.conninfo, user=role, dbname=database)
    finally:
        with psycopg.connect(target.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


def test_rows_read_from_a_servers_catalog_need_no_table_privilege(
    runs: dict[str, Path], catalog_reader: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        psycopg.connect(catalog_reader) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT count(*) FROM public.quiz_attempts")  # the role reads no row
    code = _predict(str(runs["4k"]), str(runs["32k"]), "--dsn", catalog_reader)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    said = captured.out.replace("\n", " ")
    assert "no row was read, nothing was written" in said
    assert "catalog estimates of" in said


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("same", "every run is the same size"),
        ("other series", "differs between"),
        ("unknown table", "no step of the series touched table 'lessons'"),
        ("negative", "must be at least 1"),
        ("no size", "give the production size one way"),
        ("not a folder", "not a steps results folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Path],
    tmp_path: Path,
    change: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    small, large = str(runs["4k"]), str(runs["32k"])
    args = [small, large, "--rows", "quiz_attempts=1M"]
    if change == "same":
        args = [small, small, "--rows", "quiz_attempts=1M"]
    elif change == "other series":
        edited = tmp_path / "edited"
        shutil.copytree(runs["32k"], edited)
        step = edited / f"{REWRITE}.json"
        document = json.loads(step.read_text())
        document["migration"]["checksum"] = "0" * 64
        step.write_text(json.dumps(document))
        args = [small, str(edited), "--rows", "quiz_attempts=1M"]
    elif change == "unknown table":
        args = [small, large, "--rows", "lessons=1M"]
    elif change == "negative":
        args = [small, large, "--rows", "quiz_attempts=-5"]
    elif change == "no size":
        args = [small, large]
    elif change == "not a folder":
        args = [str(tmp_path), large, "--rows", "quiz_attempts=1M"]
    code = _predict(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_version_4_step_document_says_what_it_touched_from_its_lock_holds(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Step documents before version 5 did not record ``touched`` nor up's WAL: the upgrade
    derives the first from the lock holds and leaves the WAL unknown."""
    written = json.loads((runs["32k"] / f"{REWRITE}.json").read_text())
    assert written["touched"]["quiz_attempts"] == written["checks"]["rows_before"]["quiz_attempts"]
    older = {
        k: v for k, v in written.items() if k not in ("touched", "up_wal_bytes", "up_wal_scope")
    }
    path = tmp_path / "v4.json"
    path.write_text(json.dumps(older | {"schema_version": 4}))
    upgraded = read_shaped(path)
    assert isinstance(upgraded, StepShape)
    assert upgraded.touched == written["touched"] and upgraded.up_wal_bytes is None
    # the twin: without its lock holds nothing says what it touched
    path.write_text(json.dumps(older | {"schema_version": 4, "lock_holds": []}))
    shaped = read_shaped(path)
    assert isinstance(shaped, StepShape) and shaped.touched == {}


def test_a_stall_the_apps_statement_timeout_ended_is_not_fitted(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A stall as long as the traffic's statement_timeout is where the requests gave up, not
    how long the lock was held: a lower bound, left out of the fit (the lock holds stay)."""
    edited = tmp_path / "32k"
    shutil.copytree(runs["32k"], edited)
    step = edited / f"{REWRITE}.json"
    document = json.loads(step.read_text())
    timeout_ms = document["metadata"]["options"]["traffic"]["timeout_ms"]
    blocked = document["availability"]["blocked"]
    kind = next(k for k, v in blocked.items() if v is not None)
    blocked[kind]["ms"] = timeout_ms * 0.999
    step.write_text(json.dumps(document))
    fitted = [read_series_run(runs["4k"]), read_series_run(edited)]
    rewrite = predict_series(fitted, {"quiz_attempts": 1e6}, "test").steps[0]
    figures = {f.key: f for f in rewrite.figures}
    assert figures["stall"].predicted is None
    assert figures["stall"].note.startswith("cut short at 1 size(s) by the app's statement_timeout")
    assert figures["lock AccessExclusiveLock on quiz_attempts"].predicted is not None
    # the twin: the stall as measured is fitted
    untouched = [read_series_run(runs["4k"]), read_series_run(runs["32k"])]
    stall = predict_series(untouched, {"quiz_attempts": 1e6}, "test").steps[0].figures
    assert next(f for f in stall if f.key == "stall").predicted is not None


def _with_stall(run: Path, folder: Path, stall_ms: float) -> SeriesRun:
    """A copy of ``run`` whose catalog-only step made a read wait ``stall_ms`` in the lock
    queue of its ALTER TABLE."""
    shutil.copytree(run, folder)
    path = folder / f"{CATALOG_ONLY}.json"
    document = json.loads(path.read_text())
    wait = {"kind": "read", "name": "video_header", "ms": stall_ms, "low_ms": stall_ms - 25,
            "high_ms": stall_ms + 25, "waited_for": "AccessShareLock on reflections",
            "migration_holds": None, "statement": "ALTER TABLE reflections ADD COLUMN mood text",
            "migration_waits": "AccessExclusiveLock on reflections"}  # fmt: skip
    document["availability"]["blocked"] = {"read": wait, "write": None}
    path.write_text(json.dumps(document))
    return read_series_run(folder)


def test_a_stall_is_predicted_no_longer_than_the_lock_queue_lets_a_request_wait(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A request waits on a migration at most its lock_timeout (half the 1 s budget under
    traffic) plus the longest blocking hold: a stall that grew with the rows at the fitted
    sizes, within that sum there, is capped by it at production size."""
    fitted = [
        _with_stall(runs["4k"], tmp_path / "4k", 100),
        _with_stall(runs["32k"], tmp_path / "32k", 450),
    ]
    catalog = predict_series(fitted, {"reflections": 1e9}, "test").steps[1]
    figures = {f.key: f for f in catalog.figures}
    stall, hold = figures["stall"], figures["lock AccessExclusiveLock on reflections"]
    assert stall.predicted is not None and hold.predicted is not None
    assert stall.predicted.high == pytest.approx(
        0.5 + 0.05 + hold.predicted.high
    )  # LIGHT_TRAFFIC samples every 50 ms
    assert stall.bound.startswith("at most the lock_timeout and the sampler's period, 0.55 s,")
    assert catalog.verdict == "within"
    # the twin: a stall longer than the lock queue allows at one size (something else made
    # the app wait): the fit stands, past the budget
    fitted[1] = _with_stall(runs["32k"], tmp_path / "32k-long", 900)
    catalog = predict_series(fitted, {"reflections": 1e9}, "test").steps[1]
    stall = next(f for f in catalog.figures if f.key == "stall")
    assert stall.predicted is not None and stall.predicted.high > 1 and not stall.bound
    assert catalog.verdict in ("over", "may exceed")


def test_more_wal_than_max_wal_size_makes_a_prediction_a_lower_bound(
    runs: dict[str, Path],
) -> None:
    """A step predicted to write more WAL than max_wal_size, which no run did, meets
    checkpoints inside it that no run saw: its times and WAL are lower bounds."""
    fitted = [read_series_run(runs["4k"]), read_series_run(runs["32k"])]
    wal_per_row = next(f for f in predict_series(fitted, {"quiz_attempts": 1e5}, "test")
                       .steps[0].figures if f.key == "wal").points[-1]  # fmt: skip
    limit = fitted[0].steps[REWRITE].metadata.postgres.settings["max_wal_size"]
    assert limit in ("1GB", "1024MB")
    rows = 2 * 2**30 / (wal_per_row.value / wal_per_row.rows)  # about 2 GB of WAL
    rewrite = predict_series(fitted, {"quiz_attempts": rows}, "test").steps[0]
    figures = {f.key: f for f in rewrite.figures}
    assert figures["wal"].caveat.startswith("more WAL than max_wal_size")
    assert figures["duration"].caveat == figures["wal"].caveat
    # the twin: a size whose WAL stays below it
    small = predict_series(fitted, {"quiz_attempts": 1e5}, "test").steps[0]
    assert all(not f.caveat for f in small.figures)


def test_wal_past_max_wal_size_stays_a_lower_bound_where_a_run_wrote_as_much(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Where a run already wrote more WAL than max_wal_size, its times know the checkpoints
    inside the step, but its WAL does not: the full-page images repeat with each of them."""
    edited = tmp_path / "32k"
    shutil.copytree(runs["32k"], edited)
    step = edited / f"{REWRITE}.json"
    document = json.loads(step.read_text())
    document["up_wal_bytes"] = 1.5 * 2**30  # as if it had written 1.5 GB
    step.write_text(json.dumps(document))
    fitted = [read_series_run(runs["4k"]), read_series_run(edited)]
    figures = {f.key: f for f in predict_series(fitted, {"quiz_attempts": 3e5}, "test")
               .steps[0].figures}  # fmt: skip
    assert re.match(r"more WAL than max_wal_size \(\w+\): each checkpoint", figures["wal"].caveat)
    assert not figures["duration"].caveat
    # the twin: a size it predicts below max_wal_size
    figures = {f.key: f for f in predict_series(fitted, {"quiz_attempts": 5e3}, "test")
               .steps[0].figures}  # fmt: skip
    assert not figures["wal"].caveat


def test_a_run_stopped_before_its_summary_gives_the_steps_it_finished(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = tmp_path / "96k"
    shutil.copytree(runs["96k"], stopped)
    (stopped / "summary.json").unlink()
    (stopped / f"{CATALOG_ONLY}.json").unlink()  # interrupted in its second step
    code = _predict(str(runs["4k"]), str(runs["32k"]), "--against", str(stopped))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    said = captured.out.replace("\n", " ")
    assert f"{stopped} stopped before its summary: its 1 finished step(s) are read" in said
    prediction = predict_series([read_series_run(runs["4k"]), read_series_run(runs["32k"])],
                                {}, "test", measured=read_series_run(stopped))  # fmt: skip
    rewrite, catalog = prediction.steps
    assert all(f.measured is None for f in catalog.figures)
    assert any(f.measured is not None for f in rewrite.figures)
