"""Paired sessions: where their server processes run."""

from __future__ import annotations

import os
from pathlib import Path

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
