"""Which PostgreSQL server to use, and connections to it with one-line errors.

Resolution order: ``--dsn``, ``VPBENCH_DSN``, ``DATABASE_URL``, libpq ``PG*`` variables (only
when ``PGHOST`` or ``PGDATABASE`` is set), else the embedded server, started on demand.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vpbench.errors import ServerError, UsageError
from vpbench.server.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

EMBEDDED = "embedded server"
DEFAULT_DATABASE = "vpbench"
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class ServerTarget:
    """A server to work on: a libpq conninfo for its maintenance database, and where it
    came from (``--dsn``, ``VPBENCH_DSN``, ``DATABASE_URL``, ``PG* variables``, embedded)."""

    conninfo: str
    source: str

    @property
    def maintenance_database(self) -> str:
        return str(conninfo_to_dict(self.conninfo).get("dbname") or "postgres")

    def for_database(self, dbname: str) -> str:
        """The conninfo of another database on the same server."""
        return make_conninfo(self.conninfo, dbname=dbname)

    def describe(self, dbname: str | None = None) -> str:
        """``host:port/dbname`` for messages; never includes a password."""
        params = conninfo_to_dict(self.conninfo)
        host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
        port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
        return f"{host}:{port}/{dbname or self.maintenance_database}"


def resolve_target(
    dsn: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    embedded_home: Path | None = None,
) -> ServerTarget:
    """Pick the server by the documented order; start the embedded one if it is the answer."""
    env = os.environ if environ is None else environ
    for source, value in (("--dsn", dsn), ("VPBENCH_DSN", env.get("VPBENCH_DSN")),
                          ("DATABASE_URL", env.get("DATABASE_URL"))):  # fmt: skip
        if value:
            return ServerTarget(_checked_conninfo(value, source), source)
    if env.get("PGHOST") or env.get("PGDATABASE"):
        return ServerTarget("", "PG* variables")
    status = EmbeddedPostgres(embedded_home).start()
    return ServerTarget(status.dsn("postgres"), EMBEDDED)


def _checked_conninfo(value: str, source: str) -> str:
    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"{source} is not a valid PostgreSQL connection string: {exc}") from None
    return value


def connect(
    target: ServerTarget, dbname: str | None = None, *, autocommit: bool = False
) -> psycopg.Connection[Any]:
    """Open a connection; a refused or unreachable server becomes one ServerError line."""
    conninfo = target.for_database(dbname) if dbname else target.conninfo
    try:
        return psycopg.connect(
            conninfo, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.OperationalError as exc:
        reason = _reason(exc, conninfo)
        missing = dbname is not None and f'database "{dbname}" does not exist' in reason
        raise ServerError(
            f"cannot connect to PostgreSQL at {target.describe(dbname)} "
            f"(from {target.source}): {reason}",
            sqlstate=exc.sqlstate,
            hint=f"create and fill it with: vpbench seed --db {dbname}" if missing else None,
        ) from None


def _reason(exc: psycopg.Error, conninfo: str) -> str:
    """The useful part of libpq's message, on one line, with any password masked."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if "failed: " in reason:
        reason = reason.rsplit("failed: ", 1)[1]
    password = conninfo_to_dict(conninfo).get("password")
    if password:
        reason = reason.replace(str(password), "***")
    return reason
