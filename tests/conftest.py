"""Real PostgreSQL for the tests: VPBENCH_TEST_DSN if set, else the embedded server.

Every database a session creates is named ``vpbench_test_<random>_...`` and dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql
from psycopg.conninfo import make_conninfo

from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import ServerTarget

# Property tests draw the same examples on every run, so that the suite passes or fails
# alike each time, and as many as fit the suite's ten minutes; HYPOTHESIS_PROFILE=explore
# draws ten times as many new ones to look for what they miss.
settings.register_profile("suite", derandomize=True, max_examples=100)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

DatabaseFactory = Callable[[str], str]
pytest_plugins = ["pytester"]


def traversable_tempdir(prefix: str) -> Path:
    """A temp folder the unprivileged server user can enter (pytest's tmp_path is mode 700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


CHECKOUT_RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(autouse=True)
def nothing_written_into_the_checkout() -> Iterator[None]:
    """A test writes its results under its own tmp_path, never into the checkout's
    ``results/`` (the default --out): what it leaves there fails the test that left it."""
    before = set(CHECKOUT_RESULTS.iterdir()) if CHECKOUT_RESULTS.is_dir() else set()
    yield
    after = set(CHECKOUT_RESULTS.iterdir()) if CHECKOUT_RESULTS.is_dir() else set()
    assert not after - before, f"left in the checkout: {sorted(map(str, after - before))}"


THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off"}
"""The session's own cluster is deleted at its end, so nothing in it needs to survive a
crash: without fsync every CREATE DATABASE (backups, copies) skips flushing its files, a
fifth of a steps run. WAL is written as before (full_page_writes stays on): the WAL and
write-cost figures the tests check do not change."""


def without_durability(dsn: str) -> None:
    """Apply THROWAWAY_SETTINGS to the session's own embedded server (never to a server at
    VPBENCH_TEST_DSN, which is not ours to reconfigure)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in THROWAWAY_SETTINGS.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A maintenance-database DSN of the server the tests use."""
    dsn = os.environ.get("VPBENCH_TEST_DSN")
    if dsn:
        yield dsn
        return
    home = traversable_tempdir("vpbench-test-home-")
    server = EmbeddedPostgres(home)
    try:
        dsn = server.start().dsn("postgres")
        without_durability(dsn)
        yield dsn
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def session_prefix(server_dsn: str) -> Iterator[str]:
    """Names this session's databases start with; every one of them is dropped at the end."""
    prefix = f"vpbench_test_{secrets.token_hex(4)}"
    yield prefix
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{prefix}%"]
        ).fetchall()
        for (name,) in rows:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def target(server_dsn: str, session_prefix: str) -> ServerTarget:
    """The test server as vpbench sees it (this session's databases are dropped at the end)."""
    return ServerTarget(server_dsn, "test server")


@pytest.fixture(scope="session")
def create_database(target: ServerTarget, server_dsn: str, session_prefix: str) -> DatabaseFactory:
    """Create an empty, unmarked database named after this session; returns its conninfo."""

    def create(suffix: str) -> str:
        name = f"{session_prefix}_{suffix}"
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_conninfo(server_dsn, dbname=name)

    return create


XDIST_WORKER_VARIABLES = (
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
)
"""what an xdist worker's environment says of it: a pytest session a test starts inherits
them, and must drop them to run as a session of its own (pytest-benchmark, for one,
disables itself in a worker)"""


def interruptible() -> None:
    """``preexec_fn`` for a child that a test sends Ctrl-C: a suite started from a
    background job runs with SIGINT ignored, and a child would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


TRAFFIC_WORKLOAD = """\
[params.video]
source = "SELECT DISTINCT video_id FROM quiz_attempts ORDER BY 1"

[queries.attempts]
sql = "SELECT id FROM quiz_attempts WHERE video_id = :video"
"""
"""one query on quiz_attempts: the live traffic of the lock and stall tests"""


def traffic_workload(folder: Path) -> Path:
    path = folder / "attempts.toml"
    path.write_text(TRAFFIC_WORKLOAD)
    return path


def exclusive_lock_up(seconds: int) -> str:
    """An ``up.sql`` that holds ACCESS EXCLUSIVE on quiz_attempts for ``seconds``."""
    return f"LOCK TABLE quiz_attempts IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep({seconds});\n"
