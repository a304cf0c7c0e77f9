"""Server resolution order, connection errors, and the main job on the embedded default."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from conftest import traversable_tempdir
from vpbench.errors import ServerError, UsageError
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import (
    DEFAULT_DATABASE,
    EMBEDDED,
    ServerTarget,
    connect,
    resolve_target,
)


@pytest.mark.parametrize(
    ("dsn", "environ", "source"),
    [
        ("host=a", {"VPBENCH_DSN": "host=b", "DATABASE_URL": "host=c", "PGHOST": "d"}, "--dsn"),
        (None, {"VPBENCH_DSN": "host=b", "DATABASE_URL": "host=c"}, "VPBENCH_DSN"),
        (None, {"DATABASE_URL": "host=c", "PGHOST": "d"}, "DATABASE_URL"),
        (None, {"PGHOST": "d", "PGPORT": "6543"}, "PG* variables"),
        (None, {"PGDATABASE": "app"}, "PG* variables"),
    ],
)
def test_resolution_order(dsn: str | None, environ: dict[str, str], source: str) -> None:
    target = resolve_target(dsn, environ=environ)
    assert target.source == source
    expected = {"--dsn": "host=a", "VPBENCH_DSN": "host=b", "DATABASE_URL": "host=c"}
    assert target.conninfo == expected.get(source, "")


@pytest.mark.parametrize(
    ("dsn", "environ", "dbname", "database"),
    [
        ("postgresql://u@h:5432/h_pgbench", {}, None, "h_pgbench"),
        ("host=h dbname=app", {"PGDATABASE": "other"}, None, "app"),
        ("postgresql://u@h:5432/h_pgbench", {}, "scratch", "scratch"),
        ("postgresql://u@h:5432", {}, None, DEFAULT_DATABASE),
        (None, {"DATABASE_URL": "postgresql:///staging"}, None, "staging"),
        (None, {"PGHOST": "h", "PGDATABASE": "app"}, None, "app"),
        (None, {"PGHOST": "h"}, None, DEFAULT_DATABASE),
    ],
)
def test_the_database_is_db_else_the_one_the_dsn_names(
    dsn: str | None, environ: dict[str, str], dbname: str | None, database: str
) -> None:
    assert resolve_target(dsn, environ=environ).database(dbname) == database


def test_maintenance_connection_never_goes_to_the_dsn_database(
    server_dsn: str, session_prefix: str
) -> None:
    """CREATE/DROP DATABASE need a connection elsewhere: the DSN's database may not exist
    yet, and a database cannot be dropped from a session connected to it."""
    missing = make_conninfo(server_dsn, dbname=f"{session_prefix}_not_yet")
    target = resolve_target(missing, environ={})
    with connect(target, autocommit=True) as conn:
        assert conn.info.dbname == "postgres"
    with pytest.raises(ServerError, match="does not exist") as error:
        connect(target, target.database())
    assert error.value.sqlstate == "3D000"


def test_invalid_dsn_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="VPBENCH_DSN is not a valid PostgreSQL connection"):
        resolve_target(environ={"VPBENCH_DSN": "host=a nonsense"})


def test_description_never_shows_the_password() -> None:
    target = ServerTarget("postgresql://app:hunter2@db.internal:6000/prod", "--dsn")
    assert target.describe() == "db.internal:6000/postgres"  # the maintenance connection
    assert target.describe("vpbench") == "db.internal:6000/vpbench"
    assert "dbname=vpbench" in target.for_database("vpbench")


def test_refused_connection_is_one_line_with_host_and_port() -> None:
    target = ServerTarget("postgresql://postgres:hunter2@127.0.0.1:1/postgres", "--dsn")
    with pytest.raises(ServerError) as error:
        connect(target)
    message = str(error.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1/postgres (from --dsn)")
    assert "\n" not in message and "hunter2" not in message


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    home = traversable_tempdir("vpbench-mainjob-")
    yield home
    EmbeddedPostgres(home).stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_main_job_runs_on_the_embedded_server_by_default(embedded_home: Path) -> None:
    """``vpbench seed`` + ``audit`` with no DSN anywhere start the embedded server on demand."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PG") and key not in ("VPBENCH_DSN", "DATABASE_URL")
    }
    env["VPBENCH_HOME"] = str(embedded_home)

    def vpbench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vpbench", *args], env=env, capture_output=True, text=True
        )

    seeded = vpbench("seed", "--profile", "tiny")
    assert seeded.returncode == 0, seeded.stderr
    assert f"({EMBEDDED})" in seeded.stderr
    audit = vpbench("audit", "--json")
    assert audit.returncode == 0, audit.stderr
    checks = {c["name"]: c["violations"] for c in json.loads(audit.stdout)["checks"]}
    assert checks["orphaned_quiz_attempts"] > 0
    url = vpbench("db", "url").stdout.strip()
    status = EmbeddedPostgres(embedded_home).status()
    assert status.running and url == status.dsn("vpbench")
    stopped = vpbench("db", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not EmbeddedPostgres(embedded_home).status().running
    assert "stopped" in vpbench("db", "status").stdout


@pytest.mark.dsn_server
def test_local_server_dsn_path() -> None:
    """The explicit-DSN path against the machine's server (skipped where it has none)."""
    if os.environ.get("VPBENCH_TEST_DSN") is None:
        pytest.skip(
            "VPBENCH_TEST_DSN not set: .ci/run runs it against the machine's "
            "PostgreSQL (pytest -m dsn_server)"
        )
    target = resolve_target(os.environ["VPBENCH_TEST_DSN"])
    with connect(target) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None and row[0] >= 130000
    assert target.source == "--dsn"
