"""A test session stopped with Ctrl-C cleans up after itself: no embedded server left
running and no ``vpbench_test_*`` database left on the server, with the suite's own
fixtures (conftest.py) and its two xdist workers, as the README's command runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conftest import XDIST_WORKER_VARIABLES, interruptible
from vpbench.server.embedded import EmbeddedPostgres

pytestmark = [pytest.mark.slow, pytest.mark.dsn_server]

TESTS = Path(__file__).resolve().parent
AT_A_DSN = bool(os.environ.get("VPBENCH_TEST_DSN"))
"""the suite's server is one at a DSN (it outlives the session), not an embedded one"""

HANGING_TEST = """\
import json, os, time
from pathlib import Path

import psycopg


def test_waits_for_ctrl_c(server_dsn, create_database):
    conninfo = create_database("interrupted")
    with psycopg.connect(server_dsn) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    report = Path(os.environ["REPORT_DIR"]) / f"{os.getpid()}.json"
    report.write_text(json.dumps({"dsn": server_dsn, "data_dir": data_dir, "database": name}))
    time.sleep(300)
"""


@dataclass(frozen=True)
class Session:
    """What one worker of the interrupted session had: its server and its database."""

    dsn: str
    data_dir: Path
    database: str


def _start(folder: Path, workers: int) -> tuple[subprocess.Popen[bytes], Path]:
    """The suite's conftest.py as a plugin, a hanging test in each of ``workers`` workers
    (a session of its own, so that its process group can be sent a terminal's signal)."""
    reports = folder / "reports"
    reports.mkdir()
    for number in range(workers):
        (folder / f"test_hang_{number}.py").write_text(HANGING_TEST)
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {k: v for k, v in os.environ.items() if k not in XDIST_WORKER_VARIABLES}
    env |= {"REPORT_DIR": str(reports), "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
         f"--numprocesses={workers}", "--dist=loadfile", "-q", str(folder)],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=interruptible,
    )  # fmt: skip
    return process, reports


def _running(process: subprocess.Popen[bytes], reports: Path, workers: int) -> list[Session]:
    """The sessions once every worker is in its test (each has made its database)."""
    deadline = time.monotonic() + 120
    while len(list(reports.glob("*.json"))) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            out = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"the inner session did not reach its tests: {out[-2000:]}")
        time.sleep(0.2)
    found = [json.loads(p.read_text()) for p in reports.glob("*.json")]
    return [Session(r["dsn"], Path(r["data_dir"]), r["database"]) for r in found]


def _leftovers(sessions: list[Session]) -> list[str]:
    """What the sessions left: a server still answering, a database still there."""
    left = []
    for session in sessions:
        try:
            with psycopg.connect(session.dsn, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [session.database]
                ).fetchone()
        except psycopg.OperationalError:
            if (session.data_dir / "postmaster.pid").exists():
                left.append(f"a stopped server's pid file in {session.data_dir}")
            continue
        if not AT_A_DSN:
            left.append(f"a server still running on {conninfo_to_dict(session.dsn)['port']}")
        if row is not None:
            left.append(f"database {session.database}")
    return left


def _clean_up(sessions: list[Session]) -> None:
    """Stop and remove what a killed session left (the twin's doing, not the suite's)."""
    for session in sessions:
        if AT_A_DSN:
            with psycopg.connect(session.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(session.database)))  # fmt: skip
            continue
        home = session.data_dir.parent
        EmbeddedPostgres(home).stop()
        shutil.rmtree(home)


def test_ctrl_c_leaves_no_server_and_no_database(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    process, reports = _start(tmp_path, workers=2)
    sessions = _running(process, reports, 2)
    assert len({s.dsn for s in sessions}) == 2 or AT_A_DSN
    assert _leftovers(sessions)  # while it runs, there is something to clean up
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends the terminal's process group
    out, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and b"KeyboardInterrupt" in out, out.decode()[-2000:]
    assert _leftovers(sessions) == []
    assert AT_A_DSN or not any(s.data_dir.parent.exists() for s in sessions)


def test_a_killed_session_leaves_both_and_the_check_sees_them(tmp_path: Path) -> None:
    """The twin: SIGKILL runs no teardown, and the check above finds what it left."""
    tmp_path.chmod(0o755)
    process, reports = _start(tmp_path, workers=1)
    sessions = _running(process, reports, 1)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    try:
        left = _leftovers(sessions)
        assert any(f"database {sessions[0].database}" == item for item in left), left
        if not AT_A_DSN:
            assert any(item.startswith("a server still running") for item in left), left
    finally:
        _clean_up(sessions)
    assert _leftovers(sessions) == []
