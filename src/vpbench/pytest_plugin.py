"""pytest plugin: benchmark workload queries and scenarios with pytest-benchmark.

    pytest --benchmark [PATH ...] [--vpbench-dsn DSN] [--vpbench-profile tiny]
           [--vpbench-migrate-to ID|none|all] [--vpbench-enforce-targets]

``--benchmark`` runs the benchmark suite (``bench/`` under the rootdir, or the paths given)
with pytest-benchmark, its benchmarks only: the same as ``pytest bench/ --benchmark-only``.

``vpbench_db`` is a marked database seeded at the chosen profile and migrated to the chosen
state (reused across sessions while profile, seed and migrations match); ``vpbench_query``
times one query or scenario with the ``benchmark`` fixture, so pytest-benchmark's own
options (``--benchmark-autosave``, ``--benchmark-compare-fail=median:10%``) work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.dataset.seed import seed_database
from vpbench.errors import VpbenchError
from vpbench.measure.metadata import seed_info
from vpbench.measure.plan import summarise_plan
from vpbench.measure.runner import EXPLAIN, PreparedStatements
from vpbench.migrations.apply import apply_step, migration_states, plan_up
from vpbench.migrations.ledger import applied_migrations
from vpbench.migrations.sources import discover_migrations
from vpbench.server.databases import drop_database
from vpbench.server.target import connect, resolve_target
from vpbench.workload.sampling import ParameterStream, load_parameter_pools
from vpbench.workload.spec import Query, Workload, load_workloads

EXPLAIN_RUNS = 3


BENCH_FOLDER = "bench"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vpbench", "vpbench: benchmark workload queries")
    group.addoption(
        "--benchmark",
        action="store_true",
        help=f"Run the benchmark suite ({BENCH_FOLDER}/ under the rootdir, or the paths "
        "given) with pytest-benchmark, benchmarks only.",
    )
    group.addoption("--vpbench-dsn", help="PostgreSQL server (default: vpbench's resolution).")
    group.addoption("--vpbench-profile", default="tiny", help="Scale profile to seed.")
    group.addoption("--vpbench-seed", type=int, default=1, help="Seed for data and parameters.")
    group.addoption(
        "--vpbench-workload",
        action="append",
        default=[],
        help="Workload file (repeatable; default: workloads/*.toml).",
    )
    group.addoption(
        "--vpbench-migrate-to",
        default="all",
        help="Migration id to migrate to, 'none' (legacy) or 'all'.",
    )
    group.addoption(
        "--vpbench-db",
        help="Database (default: the one the DSN names, else vpbench_pytest_<profile>_<seed>).",
    )
    group.addoption(
        "--vpbench-drop-db",
        action="store_true",
        help="Drop the database at the end (default: keep it for the next session).",
    )
    group.addoption(
        "--vpbench-enforce-targets",
        action="store_true",
        help="Fail a benchmark whose p95 misses its target.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """``pytest --benchmark``: the benchmark suite, its benchmarks only."""
    if "--benchmark" not in args:
        return
    paths = getattr(early_config.known_args_namespace, "file_or_dir", None) or []
    bench = early_config.rootpath / BENCH_FOLDER
    if not paths and bench.is_dir():
        args.append(str(bench))
    chosen = ("--benchmark-only", "--benchmark-skip", "--benchmark-disable")
    if not any(a in chosen for a in args):
        args.append("--benchmark-only")
    if early_config.pluginmanager.has_plugin("xdist"):
        # pytest-benchmark times nothing under xdist workers (and refuses --benchmark-only
        # there): a project whose addopts spread its tests over workers benchmarks in one.
        args.append("--numprocesses=0")


@dataclass(frozen=True)
class BenchDatabase:
    conninfo: str
    name: str
    applied: tuple[str, ...]


def _usage(message: str) -> pytest.UsageError:
    return pytest.UsageError(f"vpbench: {message}")


@pytest.fixture(scope="session")
def vpbench_db(pytestconfig: pytest.Config) -> Iterator[BenchDatabase]:
    """A seeded, migrated database, reused while profile, seed and migrations match."""
    database = _prepare_database(pytestconfig)
    yield database
    if pytestconfig.getoption("--vpbench-drop-db"):
        drop_database(resolve_target(pytestconfig.getoption("--vpbench-dsn")), database.name)


def _prepare_database(pytestconfig: pytest.Config) -> BenchDatabase:
    option = pytestconfig.getoption
    try:
        profile = get_profile(option("--vpbench-profile"))
        seed = int(option("--vpbench-seed"))
        target = resolve_target(option("--vpbench-dsn"))
        migrations = discover_migrations()
        wanted = option("--vpbench-migrate-to")
        if wanted not in ("none", "all") and wanted not in [m.id for m in migrations]:
            known = ", ".join(m.id for m in migrations)
            raise _usage(f"--vpbench-migrate-to {wanted!r} is not none, all or one of: {known}")
        name = (
            option("--vpbench-db")
            or target.named_database
            or f"vpbench_pytest_{profile.name}_{seed}"
        )
        connect(target, autocommit=True).close()  # a DSN that does not answer: usage error
        conninfo = target.for_database(name)
        if not _reusable(conninfo, profile.name, seed):
            seed_database(target, name, profile, seed=seed)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            ids = [m.id for m in migrations]
            goal = (
                [] if wanted == "none" else ids if wanted == "all" else ids[: ids.index(wanted) + 1]
            )
            states = migration_states(conn, migrations)
            applied = [s.migration.id for s in states if s.applied]
            if applied != goal[: len(applied)]:  # past the goal: start again from legacy
                seed_database(target, name, profile, seed=seed)
                states = migration_states(conn, migrations)
            for migration in plan_up(states, goal[-1]) if goal else ():
                apply_step(conn, migration, "up")
            return BenchDatabase(conninfo, name, applied_migrations(conn))
    except VpbenchError as exc:
        raise _usage(str(exc)) from None


def _reusable(conninfo: str, profile: str, seed: int) -> bool:
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            info = seed_info(conn)
    except psycopg.Error:
        return False
    return info.get("profile") == profile and info.get("seed") == seed


@pytest.fixture(scope="session")
def vpbench_workload(pytestconfig: pytest.Config) -> tuple[Workload, ...]:
    paths = pytestconfig.getoption("--vpbench-workload") or default_workload_paths()
    try:
        return load_workloads([Path(p) for p in paths], [m.id for m in discover_migrations()])
    except VpbenchError as exc:
        raise _usage(str(exc)) from None


def _members(
    workloads: tuple[Workload, ...], name: str
) -> tuple[Workload, list[Query], float | None]:
    for workload in workloads:
        if name in workload.queries:
            query = workload.queries[name]
            return workload, [query], query.target_ms
        if name in workload.scenarios:
            scenario = workload.scenarios[name]
            return workload, [workload.queries[q] for q in scenario.queries], scenario.target_ms
    valid = sorted(n for w in workloads for n in (*w.queries, *w.scenarios))
    pytest.fail(f"unknown workload query {name!r}; valid: {', '.join(valid)}", pytrace=False)


@pytest.fixture
def vpbench_query(
    vpbench_db: BenchDatabase,
    vpbench_workload: tuple[Workload, ...],
    benchmark: Any,
    pytestconfig: pytest.Config,
) -> Iterator[Callable[[str], None]]:
    """``vpbench_query(name)`` benchmarks one query or scenario of the workloads."""
    conn = psycopg.connect(vpbench_db.conninfo, autocommit=True)
    seed = int(pytestconfig.getoption("--vpbench-seed"))

    def run(name: str) -> None:
        workload, queries, target_ms = _members(vpbench_workload, name)
        chosen = [q.sql_for(vpbench_db.applied)[1] for q in queries]
        pools = load_parameter_pools(conn, workload)
        stream = ParameterStream(pools, {p for s in chosen for p in s.params}, seed, name)
        statements = PreparedStatements()

        def once() -> None:
            params = stream.draw()
            for sql in chosen:
                statements.execute(conn, sql, params)

        benchmark(once)
        summaries = [
            summarise_plan(conn.execute(EXPLAIN + sql.runnable, stream.draw()).fetchone()[0])  # type: ignore[index]
            for _ in range(EXPLAIN_RUNS)
            for sql in chosen
        ]
        benchmark.extra_info.update(
            {
                "vpbench_target_ms": target_ms,
                "vpbench_server_ms": float(np.median([s.execution_ms or 0 for s in summaries])),
                "vpbench_buffers": int(
                    np.median([s.shared_hit_blocks + s.shared_read_blocks for s in summaries])
                ),
                "vpbench_plan_fingerprints": sorted({s.fingerprint for s in summaries}),
                "vpbench_plan": summaries[0].to_dict(),
                "vpbench_migrations": list(vpbench_db.applied),
            }
        )
        if pytestconfig.getoption("--vpbench-enforce-targets") and target_ms is not None:
            timings = benchmark.stats.stats.data
            p95 = float(np.percentile(timings, 95)) * 1000
            if p95 > target_ms:
                pytest.fail(
                    f"{name}: p95 {p95:.2f} ms misses its target of {target_ms:g} ms", pytrace=False
                )

    yield run
    conn.close()
