"""Which PostgreSQL server and database to use, and connections with one-line errors.

Resolution order: ``--dsn``, ``VPBENCH_DSN``, ``DATABASE_URL``, libpq ``PG*`` variables (only
when ``PGHOST`` or ``PGDATABASE`` is set), else the embedded server, started on demand.

The database a command works in is ``--db``, else the one the DSN names (``PGDATABASE`` for
the ``PG*`` variables), as psql and every libpq tool read it, else ``vpbench``. CREATE and
DROP DATABASE go through a maintenance connection to ``postgres`` (``template1`` if the
server has no ``postgres``), never to the database the DSN names.
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
PG_VARIABLES = "PG* variables"
DEFAULT_DATABASE = "vpbench"
MAINTENANCE_DATABASES = ("postgres", "template1")
CONNECT_TIMEOUT_SECONDS = 10
INVALID_CATALOG_NAME = "3D000"
"""SQLSTATE of a connection to a database that does not exist"""


@dataclass(frozen=True)
class ServerTarget:
    """A server to work on: a libpq conninfo, where it came from (``--dsn``,
    ``VPBENCH_DSN``, ``DATABASE_URL``, ``PG* variables``, embedded) and the database it
    names, if any."""

    conninfo: str
    source: str
    named_database: str | None = None

    @property
    def maintenance_database(self) -> str:
        return MAINTENANCE_DATABASES[0]

    def database(self, dbname: str | None = None) -> str:
        """The database a command works in: ``dbname`` (``--db``), else the one the DSN
        names, else ``vpbench``."""
        return dbname or self.named_database or DEFAULT_DATABASE

    def for_database(self, dbname: str) -> str:
        """The conninfo of a database on this server."""
        return make_conninfo(self.conninfo, dbname=dbname)

    def describe(self, dbname: str | None = None) -> str:
        """``host:port/dbname`` for messages; never includes a password."""
        return f"{server_address(self.conninfo)}/{dbname or self.maintenance_database}"


def server_address(conninfo: str) -> str:
    """``host:port`` of a connection string, as libpq reads it (PGHOST, PGPORT and the
    defaults where it names none)."""
    params = conninfo_to_dict(conninfo)
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    return f"{host}:{port}"


def database_or_dsn(target: ServerTarget, value: str, option: str) -> tuple[str, bool]:
    """``value`` as ``--a``, ``--b`` and ``--from`` take it: a database name on
    ``target``'s server, or a DSN of its own. Its conninfo, and whether a DSN named it; a
    malformed DSN is a UsageError naming ``option``."""
    if "://" not in value and "=" not in value:
        return target.for_database(value), False
    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"{option} is not a valid connection string: {_reason(exc, '')}") from None
    return value, True


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
            conninfo = _checked_conninfo(value, source)
            named = conninfo_to_dict(conninfo).get("dbname")
            return ServerTarget(conninfo, source, str(named) if named else None)
    if env.get("PGHOST") or env.get("PGDATABASE"):
        return ServerTarget("", PG_VARIABLES, env.get("PGDATABASE") or None)
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
    """Open a connection to ``dbname``, or to the maintenance database when it is None; a
    refused or unreachable server becomes one ServerError line."""
    if dbname is not None:
        return _connect(target, dbname, autocommit)
    for name in MAINTENANCE_DATABASES[:-1]:
        try:
            return _connect(target, name, autocommit)
        except ServerError as exc:
            if exc.sqlstate != INVALID_CATALOG_NAME:
                raise
    return _connect(target, MAINTENANCE_DATABASES[-1], autocommit)


def _connect(target: ServerTarget, dbname: str, autocommit: bool) -> psycopg.Connection[Any]:
    try:
        return open_connection(target.for_database(dbname), autocommit=autocommit,
                               source=target.source)  # fmt: skip
    except ServerError as exc:
        if exc.sqlstate != INVALID_CATALOG_NAME:
            raise
        hint = f"create and fill it with: vpbench seed --db {dbname}"
        raise ServerError(exc.message, sqlstate=exc.sqlstate, hint=hint) from None


def open_connection(
    conninfo: str, *, autocommit: bool = False, source: str = ""
) -> psycopg.Connection[Any]:
    """Every connection vpbench opens: within ``CONNECT_TIMEOUT_SECONDS``, and a failure is
    one line naming the server (and ``source``, the option or variable that named it): a
    ServerError (exit 1) for a server that refuses or cannot be reached, a UsageError
    (exit 2) for a malformed connection string."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"malformed connection string{_named_by(source)}: "
                         f"{_reason(exc, '')}") from None  # fmt: skip
    where = f"{server_address(conninfo)}/{params.get('dbname') or ''}"
    try:
        return psycopg.connect(conninfo, autocommit=autocommit,
                               connect_timeout=CONNECT_TIMEOUT_SECONDS)  # fmt: skip
    except psycopg.OperationalError as exc:
        reason = _reason(exc, conninfo)
        missing = "does not exist" in reason and "database" in reason
        raise ServerError(
            f"cannot connect to PostgreSQL at {where}{_named_by(source)}: {reason}",
            sqlstate=INVALID_CATALOG_NAME if missing else exc.sqlstate,
        ) from None


def _named_by(source: str) -> str:
    return f" (from {source})" if source else ""


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


def error_message(exc: psycopg.Error) -> str:
    """The server's message on one line, with its SQLSTATE."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return f"{text} [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else text


def untracked(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: keep what it runs out of pg_stat_statements, the server's
    record of the application's own statements (vpbench's setup queries are not the app's
    traffic). Needs a superuser; for anyone else it does nothing."""
    if conn.info.parameter_status("is_superuser") == "on":
        conn.execute("SET LOCAL pg_stat_statements.track = 'none'")
