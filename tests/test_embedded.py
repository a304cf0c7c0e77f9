"""The embedded server, with real processes: always run, even when VPBENCH_TEST_DSN is set."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs
import psycopg
import pytest

from conftest import traversable_tempdir
from vpbench.errors import ServerError
from vpbench.server.buffers import buffer_evictor
from vpbench.server.embedded import EmbeddedPostgres, EmbeddedStatus, default_home
from vpbench.server.target import EMBEDDED, ServerTarget

_START_IN_CHILD = """
import sys, time
from pathlib import Path
from vpbench.server.embedded import EmbeddedPostgres
print(EmbeddedPostgres(Path(sys.argv[1])).start().pid, flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    """A server under a fresh home, shared by the tests here; stopped and removed after."""
    home = traversable_tempdir("vpbench-embedded-")
    server = EmbeddedPostgres(home)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def _server_version_num(status: EmbeddedStatus) -> int:
    with psycopg.connect(status.dsn()) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0])


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_cold_start_serves_sql_over_tcp(server: EmbeddedPostgres) -> None:
    began = time.perf_counter()
    status = server.start()
    elapsed = time.perf_counter() - began

    assert status.running
    assert status.dsn().startswith(f"postgresql://postgres@127.0.0.1:{status.port}/")
    assert status.version.startswith("18.")
    assert _server_version_num(status) >= 180000
    with psycopg.connect(status.dsn()) as conn:
        row = conn.execute("SELECT host(inet_server_addr())").fetchone()
    assert row == ("127.0.0.1",)
    assert server.bin_path("pg_dump").is_file()
    print(f"cold start {elapsed:.2f} s")


def test_unix_socket_in_data_dir(server: EmbeddedPostgres) -> None:
    status = server.start()

    socket_file = server.data_dir / f".s.PGSQL.{status.port}"
    assert socket_file.is_socket()
    with psycopg.connect(
        host=str(server.data_dir), port=status.port, user="postgres", dbname="postgres"
    ) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_start_again_reuses_the_running_server(server: EmbeddedPostgres) -> None:
    first = server.start()
    began = time.perf_counter()
    again = EmbeddedPostgres(server.home).start()
    elapsed = time.perf_counter() - began

    assert (again.pid, again.port) == (first.pid, first.port)
    print(f"reuse {elapsed:.3f} s")


def test_status_reports_the_running_server(server: EmbeddedPostgres) -> None:
    started = server.start()

    status = server.status()

    assert status == started
    assert status.running and status.pid is not None and status.port is not None
    assert status.home == server.home
    assert status.data_dir == server.data_dir


def test_server_of_a_killed_process_is_reused(server: EmbeddedPostgres) -> None:
    server.stop()
    child = subprocess.Popen(
        [sys.executable, "-c", _START_IN_CHILD, str(server.home)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 60)
        line = child.stdout.readline() if readable else ""
    finally:
        child.kill()
        child.wait()
    assert line.strip().isdigit(), f"the child printed {line!r}"

    status = EmbeddedPostgres(server.home).start()

    assert status.pid == int(line)
    assert _server_version_num(status) >= 180000


def test_start_after_the_postmaster_was_killed(server: EmbeddedPostgres) -> None:
    killed = server.start()
    assert killed.pid is not None
    os.kill(killed.pid, signal.SIGKILL)

    status = server.start()

    assert status.running and status.pid != killed.pid
    assert _server_version_num(status) >= 180000


def test_failed_start_reports_the_server_log(server: EmbeddedPostgres) -> None:
    server.stop()
    settings = server.data_dir / "postgresql.auto.conf"
    original = settings.read_text()
    settings.write_text(original + "shared_buffers = 'plenty'\n")
    try:
        with pytest.raises(ServerError, match=r"did not start: .*FATAL") as error:
            server.start()
        assert str(server.log_file) in (error.value.hint or "")
        assert not server.status().running
    finally:
        settings.write_text(original)

    assert server.start().running


def test_stop_leaves_no_process(server: EmbeddedPostgres) -> None:
    server.start()

    assert server.stop() is True

    assert _processes_mentioning(str(server.data_dir)) == []
    status = server.status()
    assert (status.running, status.pid, status.port) == (False, None, None)
    with pytest.raises(ServerError, match="not running"):
        status.dsn()
    assert server.stop() is False


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_home_under_a_private_folder_is_refused() -> None:
    outer = traversable_tempdir("vpbench-private-")
    private = outer / "private"
    private.mkdir()
    private.chmod(0o700)
    try:
        with pytest.raises(ServerError, match=re.escape(str(private))) as error:
            EmbeddedPostgres(private / "home").start()
        assert "VPBENCH_HOME" in (error.value.hint or "")
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(outer)


def test_default_home_follows_vpbench_home() -> None:
    assert default_home({"VPBENCH_HOME": "/srv/bench"}) == Path("/srv/bench")


def test_default_home_is_a_cache_folder() -> None:
    expected = (
        platformdirs.site_cache_dir("vpbench")
        if os.geteuid() == 0
        else platformdirs.user_cache_dir("vpbench")
    )
    assert default_home({}) == Path(expected)


def _resident_pages(conn: psycopg.Connection[Any], dbname: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_buffercache b JOIN pg_database d ON d.oid = b.reldatabase "
        "WHERE d.datname = %s",
        [dbname],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_paired_rounds_can_start_from_empty_shared_buffers(server: EmbeddedPostgres) -> None:
    """On vpbench's own server the evictor empties shared buffers; any other server is left
    alone (the twin: the same server named by a DSN is not ours to flush)."""
    status = server.start()
    with psycopg.connect(status.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS buffers")
        conn.execute("CREATE DATABASE buffers")
    with psycopg.connect(status.dsn("buffers"), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g"
        )
        conn.execute("SELECT count(*) FROM t")
    with psycopg.connect(status.dsn(), autocommit=True) as conn:
        with buffer_evictor(ServerTarget(status.dsn(), "--dsn")) as evict:
            assert evict is None
        with buffer_evictor(ServerTarget(status.dsn(), EMBEDDED)) as evict:
            assert evict is not None
            assert _resident_pages(conn, "buffers") > 100
            evict()
            assert _resident_pages(conn, "buffers") == 0
