"""``vpbench db``: the embedded server (start, stop, status, url) and dropping databases."""

from __future__ import annotations

import click
import psycopg

from vpbench.cli._common import db_option, dsn_option, out, resolve_database
from vpbench.server.databases import drop_database
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import DEFAULT_DATABASE
from vpbench.steps.copies import copies_outlook

# scipy and matplotlib take a second to import: the commands import them when they run, so
# every other command (and Ctrl-C early in one) stays quick.


@click.group()
def db() -> None:
    """Control the embedded PostgreSQL server (used when no DSN is given)."""


@db.command("start")
def db_start() -> None:
    """Start the embedded server, or reuse the one already running."""
    status = EmbeddedPostgres().start()
    out.print(f"embedded PostgreSQL {status.version} running (pid {status.pid}) at {status.dsn()}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server; no postgres process of ours is left."""
    stopped = EmbeddedPostgres().stop()
    out.print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@db.command("status")
def db_status() -> None:
    """Show whether the embedded server runs, where, and its data directory."""
    status = EmbeddedPostgres().status()
    state = f"running (pid {status.pid}, port {status.port})" if status.running else "stopped"
    out.print(f"embedded PostgreSQL {status.version}: {state}")
    out.print(f"data directory: {status.data_dir}")
    if status.running:
        out.print(f"url: {status.dsn()}")
        with psycopg.connect(status.dsn(), autocommit=True) as conn:
            out.print(copies_outlook(conn, DEFAULT_DATABASE), highlight=False)


@db.command("url")
@db_option
def db_url(dbname: str | None) -> None:
    """Print the connection URL of a database on the embedded server (starts it if needed)."""
    url = EmbeddedPostgres().start().dsn(dbname or DEFAULT_DATABASE)
    out.print(url, highlight=False, soft_wrap=True)


@db.command("drop")
@db_option
@dsn_option
@click.option("--force", is_flag=True, help="Drop it even though vpbench did not create it.")
def db_drop(dbname: str | None, dsn: str | None, force: bool) -> None:
    """Drop a database vpbench created."""
    target, dbname = resolve_database(dsn, dbname)
    dropped = drop_database(target, dbname, force=force)
    out.print(f"dropped database {dbname}" if dropped else f"database {dbname} does not exist")
