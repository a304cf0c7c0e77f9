"""``vpbench capture`` and ``vpbench coverage`` against pg_stat_statements: on an embedded
server (which loads it) end to end, and on a server without it (the machine's 5432)."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import traversable_tempdir
from vpbench.cli.main import main
from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.measure.run import run_workloads
from vpbench.measure.runner import RunOptions
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import EMBEDDED, ServerTarget
from vpbench.workload.capture import capture_workload
from vpbench.workload.spec import load_workload

QUICK = RunOptions(warmup=1, repeat=4, explain=1, clients=1, timeout_ms=10_000, seed=2)


@pytest.fixture(scope="module")
def statements_server() -> Iterator[ServerTarget]:
    """An embedded server of this module's own: it loads pg_stat_statements."""
    home = traversable_tempdir("vpbench-capture-")
    server = EmbeddedPostgres(home)
    try:
        yield ServerTarget(server.start().dsn("postgres"), EMBEDDED)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


@pytest.mark.slow
def test_capture_run_the_captured_file_and_its_coverage(
    statements_server: ServerTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed, run the reference workloads, capture, run the captured file: the coverage of
    the captured file is at least the share the capture reported."""
    target, name = statements_server, "captured"
    seed_database(target, name, get_profile("tiny"), seed=3)
    run_workloads(target, name, default_workload_paths(), QUICK, out_dir=tmp_path / "runs")
    monkeypatch.setenv("VPBENCH_DSN", target.for_database(name))
    monkeypatch.setenv("COLUMNS", "200")

    path = tmp_path / "captured.toml"
    code, out, err = cli(capsys, "capture", "--out", str(path), "--top", "30")
    assert code == 0, err
    header = path.read_text()
    match = re.search(r"queries cover (\d+\.\d)% of the execution time", header)
    assert match, header[:600]
    share = float(match.group(1))
    assert 0 < share <= 100 and f"{share}%" in out
    workload = load_workload(path, ())
    document = tomllib.loads(header)
    assert len(workload.queries) >= 5
    for query in workload.queries.values():
        assert not re.search(r"\$\d", query.sql.source), query.sql.source
    # The video page's lookups are compared with videos.id: that column's values are drawn.
    sources = [p["source"] for p in document["params"].values() if "source" in p]
    assert any('FROM "videos"' in s for s in sources), sources
    # Parameter sources are vpbench's setup, not the app's traffic: none was captured.
    assert all("::text AS" not in q.sql.source for q in workload.queries.values())

    code, _, err = cli(capsys, "run", str(path), "--repeat", "3", "--explain", "1",
                       "--out", str(tmp_path / "captured-run"))  # fmt: skip
    assert code == 0, err
    # A captured file runs: every query was tried with every value of its parameters' pools
    # (one failed with values its single trial had not drawn: '' cast to integer).
    (run_file,) = (tmp_path / "captured-run").glob("*.json")
    failed = [e["name"] for e in json.loads(run_file.read_text())["entries"]
              if e["status"] != "ok"]  # fmt: skip
    assert failed == []
    assert all("Ran at capture with every one of its" in q["description"]
               for q in document["queries"].values())  # fmt: skip

    code, out, err = cli(capsys, "coverage", str(path), "--fail-under", str(share))
    assert code == 0, err
    covered = float(re.search(r"covered: (\d+\.\d)%", out).group(1))  # type: ignore[union-attr]
    assert covered >= share
    assert "captured.select_" in out

    # The twin: a workload the server never ran covers nothing, and --fail-under says so.
    other = tmp_path / "other.toml"
    other.write_text('[queries.nothing]\nsql = "SELECT count(*) FROM courses WHERE id IS NULL"\n')
    code, out, err = cli(capsys, "coverage", str(other), "--fail-under", "1")
    assert code == 1 and "covered: 0.0%" in out and "under --fail-under 1%" in err
    assert "not covered" in out


def test_parameters_follow_the_columns_they_are_compared_with(
    statements_server: ServerTarget, tmp_path: Path
) -> None:
    """pg_stat_statements turned every constant into $n; the parser says what each is."""
    target, name = statements_server, "binding"
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(target.for_database(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (a int, b int, tag text)")
        conn.execute("INSERT INTO items SELECT g, g % 7, 't' || g FROM generate_series(1, 500) g")
        for a in (5, 6):
            conn.execute(
                f"SELECT i.tag FROM items i WHERE i.a = {a} AND b BETWEEN 1 AND 3 "
                f"AND length(tag) > {a} ORDER BY a LIMIT 10 OFFSET 2"
            )
            conn.execute(f"UPDATE items SET b = {a} WHERE a = {a}")
    captured = capture_workload(target, name, top=5, min_calls=2)
    (query,) = captured.queries
    assert query.name == "select_items"
    params = {p.name: p for p in captured.parameters}
    assert query.sql == (
        "SELECT i.tag FROM items i WHERE i.a = :items_a AND b BETWEEN :items_b AND :items_b_2 "
        "AND length(tag) > :select_items_p4 ORDER BY a LIMIT :select_items_limit "
        "OFFSET :select_items_offset"
    )
    assert params["items_a"].source is not None and '"a"::text' in params["items_a"].source
    b_source = params["items_b"].source
    assert b_source is not None and '"b"::text' in b_source
    assert params["items_b_2"].source == b_source.replace("items_b", "items_b_2")
    assert (params["select_items_p4"].value, params["select_items_limit"].value) == (1, 20)
    assert params["select_items_offset"].value == 0
    ((left_out, why),) = captured.left_out
    assert left_out.text.startswith("UPDATE items") and "writes" in why
    path = tmp_path / "binding.toml"
    path.write_text(captured.to_toml())
    assert set(load_workload(path, ()).queries) == {"select_items"}


@pytest.mark.dsn_server
def test_a_server_without_pg_stat_statements_is_one_line_saying_how_to_enable_it(
    target: ServerTarget, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The machine's PostgreSQL 15 does not preload it; nothing is created there."""
    with psycopg.connect(target.conninfo) as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    if preload and "pg_stat_statements" in str(preload[0]):
        pytest.skip(
            "this test server loads pg_stat_statements (the embedded one does): .ci/run "
            "runs it against the machine's PostgreSQL (pytest -m dsn_server)"
        )
    out = tmp_path / "captured.toml"
    for command in (
        ["capture", "--out", str(out)],
        ["coverage", *map(str, default_workload_paths())],
    ):
        code, _, err = cli(capsys, *command, "--dsn", target.conninfo)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert "pg_stat_statements is not available on" in lines[0]
        assert "shared_preload_libraries = 'pg_stat_statements'" in lines[0]
    assert not out.exists()
    with psycopg.connect(target.conninfo) as conn:
        created = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone()
    assert created is None
