"""The pytest plugin, run in a real pytest session (pytester) against real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from conftest import XDIST_WORKER_VARIABLES

FAST_WORKLOAD = """\
[params.video]
source = "SELECT id::text FROM videos ORDER BY id"
pool = 5

[params.nap]
value = {nap}

[queries.header]
target_ms = {target}
sql = "SELECT v.id, v.title, pg_sleep(:nap) FROM videos v WHERE v.id = :video"
"""

TEST_FILE = """
def test_header(vpbench_query):
    vpbench_query("{name}")
"""


@pytest.fixture(autouse=True)
def outside_any_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest sessions these tests start are not workers of this suite's xdist run."""
    for name in XDIST_WORKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run_bench(
    pytester: pytest.Pytester,
    server_dsn: str,
    session_prefix: str,
    *extra: str,
    nap: float = 0.0,
    target: float = 1000,
    name: str = "header",
) -> pytest.RunResult:
    workload = pytester.path / "w.toml"
    workload.write_text(FAST_WORKLOAD.format(nap=nap, target=target))
    pytester.makepyfile(test_bench=TEST_FILE.format(name=name))
    return pytester.runpytest_subprocess(
        "--benchmark-only", "--benchmark-min-rounds=5", "--benchmark-max-time=0.05",
        f"--vpbench-dsn={server_dsn}", f"--vpbench-db={session_prefix}_plugin",
        f"--vpbench-workload={workload}", "--vpbench-migrate-to=none", "-p", "no:cacheprovider",
        *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_benchmark_json_carries_vpbench_info(
    pytester: pytest.Pytester, server_dsn: str, session_prefix: str
) -> None:
    result = run_bench(
        pytester, server_dsn, session_prefix, "--benchmark-json=out.json", "--vpbench-drop-db"
    )
    result.assert_outcomes(passed=1)
    with psycopg.connect(server_dsn) as conn:
        left = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [f"{session_prefix}_plugin"]
        ).fetchone()
    assert left is None  # --vpbench-drop-db dropped it
    (bench,) = json.loads(Path(pytester.path / "out.json").read_text())["benchmarks"]
    info = bench["extra_info"]
    assert info["vpbench_target_ms"] == 1000
    assert info["vpbench_server_ms"] > 0 and info["vpbench_buffers"] > 0
    assert len(info["vpbench_plan_fingerprints"][0]) == 16
    # The plan summary is this query's: videos read by its primary key or scanned whole.
    plan = info["vpbench_plan"]
    if "Seq Scan" in plan["node_types"]:
        assert plan["indexes_used"] == []
    else:
        assert plan["indexes_used"] == ["videos_pkey"] and "Index Scan" in plan["node_types"]
    assert set(plan["node_types"]) <= {"Seq Scan", "Index Scan", "Result"}
    assert plan["shared_hit_blocks"] + plan["shared_read_blocks"] > 0
    assert info["vpbench_migrations"] == []


@pytest.mark.slow
def test_enforce_targets(pytester: pytest.Pytester, server_dsn: str, session_prefix: str) -> None:
    missed = run_bench(pytester, server_dsn, session_prefix, "--vpbench-enforce-targets",
                       target=0.0001)  # fmt: skip
    missed.assert_outcomes(failed=1)
    missed.stdout.fnmatch_lines(["*header: p95 * ms misses its target of 0.0001 ms*"])
    met = run_bench(pytester, server_dsn, session_prefix, "--vpbench-enforce-targets")
    met.assert_outcomes(passed=1)


@pytest.mark.slow
def test_compare_fail_catches_a_slowed_query(
    pytester: pytest.Pytester, server_dsn: str, session_prefix: str
) -> None:
    run_bench(pytester, server_dsn, session_prefix, "--benchmark-autosave").assert_outcomes(
        passed=1
    )
    slowed = run_bench(pytester, server_dsn, session_prefix, "--benchmark-compare",
                       "--benchmark-compare-fail=median:10%", nap=0.005)  # fmt: skip
    assert slowed.ret != 0
    assert "Performance has regressed" in slowed.stdout.str() + slowed.stderr.str()


@pytest.mark.slow
def test_bad_input(pytester: pytest.Pytester, server_dsn: str, session_prefix: str) -> None:
    unknown = run_bench(pytester, server_dsn, session_prefix, name="headr")
    unknown.assert_outcomes(failed=1)
    unknown.stdout.fnmatch_lines(["*unknown workload query 'headr'; valid: header*"])
    assert "Traceback" not in unknown.stdout.str()
    bad_target = run_bench(pytester, server_dsn, session_prefix, "--vpbench-migrate-to=9999_x")
    bad_target.stdout.fnmatch_lines(["*--vpbench-migrate-to '9999_x' is not none, all or one of*"])
    refused = run_bench(pytester, "postgresql://postgres:pw@127.0.0.1:1/postgres", session_prefix)
    assert refused.ret != 0
    refused.stdout.fnmatch_lines(["*cannot connect to PostgreSQL at 127.0.0.1:1*"])
    assert "pw@" not in refused.stdout.str()


@pytest.mark.slow
def test_pytest_benchmark_runs_the_benchmark_suite(
    pytester: pytest.Pytester, server_dsn: str, session_prefix: str
) -> None:
    """``pytest --benchmark`` in a project's root runs bench/ with pytest-benchmark, its
    benchmarks only (it used to stop at "unrecognized arguments: --benchmark")."""
    workload = pytester.path / "w.toml"
    workload.write_text(FAST_WORKLOAD.format(nap=0.0, target=1000))
    bench = pytester.mkdir("bench")
    (bench / "test_page.py").write_text(TEST_FILE.format(name="header"))
    (bench / "test_plain.py").write_text("def test_not_a_benchmark():\n    pass\n")
    tests = pytester.mkdir("tests")
    (tests / "test_unit.py").write_text("def test_unit():\n    assert False\n")
    # a project that spreads its tests over xdist workers, as this one does
    pytester.makeini("[pytest]\naddopts = --numprocesses=2\n")
    options = ("--benchmark-min-rounds=5", "--benchmark-max-time=0.05",
               f"--vpbench-dsn={server_dsn}", f"--vpbench-db={session_prefix}_plugin",
               f"--vpbench-workload={workload}", "--vpbench-migrate-to=none",
               "-p", "no:cacheprovider")  # fmt: skip
    result = pytester.runpytest_subprocess("--benchmark", *options)
    result.assert_outcomes(passed=1, skipped=1)  # the benchmark; the plain test is skipped
    result.stdout.fnmatch_lines(["*benchmark*", "*test_header*"])
    # The twin: without --benchmark, the same command collects the failing unit test.
    plain = pytester.runpytest_subprocess(*options)
    assert plain.ret != 0
    plain.stdout.fnmatch_lines(["*2 workers*", "*test_unit*"])
