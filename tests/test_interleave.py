"""Paired sessions: where their server processes run."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vpbench.measure.interleave import (
    PairedOptions,
    measure_paired,
    open_pair,
    pin_backend,
    separate_cores,
)
from vpbench.server.target import ServerTarget
from vpbench.workload.spec import load_workloads


def _cores_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(
        line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list")
    )


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_both_sides_share_one_core_away_from_the_client(target: ServerTarget) -> None:
    before = os.sched_getaffinity(0)
    conninfo = {"before": target.conninfo, "after": target.conninfo}
    with separate_cores() as core, open_pair(conninfo, ("after", "before"), 5_000, core) as pair:
        assert core == max(before) and os.sched_getaffinity(0) == {min(before)}
        pids = [conn.info.backend_pid for conn in pair.values()]
        assert list(pair) == ["after", "before"]  # opened in the round's order
        if _cores_of(pids[0]) != str(core) and not pin_backend(pids[0], core or 0):
            pytest.skip("this user may not set the server processes' CPU affinity")
        assert [_cores_of(pid) for pid in pids] == [str(core), str(core)]
    assert os.sched_getaffinity(0) == before


def test_only_a_fresh_postgres_process_is_pinned() -> None:
    assert pin_backend(os.getpid(), 0) is False  # this process is not a server's
    assert pin_backend(2**22 + 12345, 0) is False  # no such process


def test_before_round_runs_once_before_every_round(target: ServerTarget, tmp_path: Path) -> None:
    workload = tmp_path / "one.toml"
    workload.write_text('[queries.one]\nsql = "SELECT 1"\n')
    (loaded,) = load_workloads([workload], ())
    calls: list[int] = []
    options = PairedOptions(rounds=3, max_rounds=3, repeat=1, round_ms=0, explain=0)
    session = measure_paired(
        target.conninfo, target.conninfo, [loaded], {loaded.name: {}}, (), (), options,
        before_round=lambda: calls.append(len(calls)),
    )  # fmt: skip
    assert session.rounds == 3 and calls == [0, 1, 2]


def _session(target: ServerTarget, folder: Path, sql: str, options: PairedOptions) -> Any:
    workload = folder / "one.toml"
    workload.write_text(f'[queries.one]\nsql = "{sql}"\n')
    (loaded,) = load_workloads([workload], ())
    return measure_paired(target.conninfo, target.conninfo, [loaded], {loaded.name: {}}, (),
                          (), options)  # fmt: skip


def test_the_budget_stops_a_session_after_its_minimum_rounds(
    target: ServerTarget, tmp_path: Path
) -> None:
    """Spent budget: min_rounds rounds, not rounds (pytest-benchmark's min_rounds and
    max_time); with budget left the same session gets its rounds (the twin)."""
    quick = PairedOptions(rounds=6, min_rounds=2, max_rounds=6, repeat=2, round_ms=0, explain=0)
    spent = _session(target, tmp_path, "SELECT 1", replace(quick, budget_seconds=0.0))
    assert spent.rounds == 2
    left = _session(target, tmp_path, "SELECT 1", replace(quick, budget_seconds=60.0))
    assert left.rounds == 6


@pytest.mark.slow
def test_a_pair_of_a_second_or_more_runs_once_a_round_and_explains_once(
    target: ServerTarget, tmp_path: Path
) -> None:
    """A 0.6 s query (1.2 s a pair) gets one pair a round and one EXPLAIN per side, however
    many --repeat and --explain ask for; a fast one gets its --repeat pairs (the twin)."""
    options = PairedOptions(rounds=2, min_rounds=2, max_rounds=2, repeat=3, explain=3)
    slow = _session(target, tmp_path, "SELECT pg_sleep(0.6)", options)
    (before,) = slow.before
    assert len(before.samples_ns) == 2 and before.rounds == (0, 1)
    assert len(before.explains) == 1
    fast = _session(target, tmp_path, "SELECT 1", replace(options, round_ms=0))
    (before,) = fast.before
    assert len(before.samples_ns) == 6 and len(before.explains) == 3


def test_an_application_layer_version_is_paired_only_when_asked(
    target: ServerTarget, tmp_path: Path
) -> None:
    """With app_layer the app's Python runs pair by pair like the queries, as
    ``one[app]`` on both sides with the same rounds and no plan; without it (the twin) the
    session leaves it out."""
    (tmp_path / "one_app.py").write_text(
        "def one(conn, params):\n    conn.execute('SELECT 1').fetchall()\n"
    )
    workload = tmp_path / "one.toml"
    workload.write_text('[queries.one]\nsql = "SELECT 1"\napp = "one_app:one"\n')
    (loaded,) = load_workloads([workload], ())
    options = PairedOptions(rounds=2, min_rounds=2, max_rounds=2, repeat=2, round_ms=0)
    paired = [measure_paired(target.conninfo, target.conninfo, [loaded], {loaded.name: {}},
                             (), (), replace(options, app_layer=app_layer))
              for app_layer in (True, False)]  # fmt: skip
    assert [e.name for e in paired[0].before] == ["one", "one[app]"]
    before, after = paired[0].before[1], paired[0].after[1]
    assert (before.kind, before.variant, before.status) == ("app", "one_app:one", "ok")
    assert len(before.samples_ns) == len(after.samples_ns) == 4
    assert before.rounds == after.rounds == (0, 0, 1, 1) and before.plan is None
    assert [e.name for e in paired[1].before] == ["one"]
