"""``vpbench db``: the embedded server (start, stop, status, url, its copy-on-write volume)
and dropping databases."""

from __future__ import annotations

import click
import psycopg

from vpbench.cli._common import db_option, dsn_option, out, resolve_database
from vpbench.errors import UsageError
from vpbench.reporting.units import human_bytes
from vpbench.server.databases import drop_database
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import DEFAULT_DATABASE
from vpbench.server.volume import image_for, make_volume, remove_volume
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


_UNITS = {"M": 1024**2, "G": 1024**3, "T": 1024**4}


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``80G``, ``500M``, ``1T`` in bytes."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B")
    if not text or text[-1] not in _UNITS or not text[:-1].replace(".", "", 1).isdigit():
        raise UsageError(f"--size {value}: expected a size like 80G, 500M or 1T")
    return int(float(text[:-1]) * _UNITS[text[-1]])


@db.group("volume")
def db_volume() -> None:
    """A copy-on-write volume for the embedded server (Linux, as root): instant copies."""


@db_volume.command("create")
@click.option("--size", callback=_parse_size, metavar="SIZE",
              help="Most disk the volume may take, e.g. 80G (default: the free space). "
              "The image is sparse: it takes only what the server writes.")  # fmt: skip
def db_volume_create(size: int | None) -> None:
    """Make a sparse XFS image with reflink beside VPBENCH_HOME and mount it there (again,
    after a reboot); the embedded server then keeps its data on it and every copy vpbench
    makes of a database is a clone that shares blocks."""
    home = EmbeddedPostgres().home
    volume = make_volume(home, size)
    made = "made and mounted" if volume.created else "mounted"
    out.print(f"{made} {volume.image} ({human_bytes(volume.size_bytes)}, XFS with reflink) "
              f"at {volume.mount_point}: copies there share blocks", highlight=False)  # fmt: skip


@db_volume.command("remove")
@click.option("--yes", is_flag=True, help="Confirm: every database of the embedded server "
              "on the volume is deleted with it.")  # fmt: skip
def db_volume_remove(yes: bool) -> None:
    """Stop the embedded server, unmount its volume and delete the image."""
    server = EmbeddedPostgres()
    if not yes:
        raise UsageError(f"removing {image_for(server.home)} deletes every database of the "
                         "embedded server on it; pass --yes")  # fmt: skip
    server.stop()
    removed = remove_volume(server.home)
    out.print(f"removed {image_for(server.home)}" if removed else "no volume to remove",
              highlight=False)  # fmt: skip
