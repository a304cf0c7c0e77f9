"""What vpbench's copies of a database cost here, said in one line: before a run (will a copy
be instant, or cost the database's size?) and after each copy (how it was made, how long it
took, how much disk it really took)."""

from __future__ import annotations

from typing import Any

import psycopg

from vpbench.reporting.units import human_bytes
from vpbench.server.backup import Backup
from vpbench.server.disk import CLONE_SINCE, data_disk

CLONING_FILESYSTEMS = "XFS (reflink), btrfs, APFS or OpenZFS >= 2.2"


def describe_copy(copy: Backup) -> str:
    """``clone, 0.21 s, +0.2 MB of disk``."""
    text = f"{copy.method}, {copy.seconds:.2f} s"
    if copy.added_bytes is not None:
        text += f", {human_bytes(copy.added_bytes, signed=True)} of disk"
    return text


def copies_outlook(conn: psycopg.Connection[Any], dbname: str | None = None) -> str:
    """Whether copies made on ``conn``'s server will share blocks, or cost a database's
    size each (that of ``dbname`` if given), and how to get instant ones."""
    version = conn.info.server_version
    disk = data_disk(conn)
    size = None
    if dbname is not None:
        row = conn.execute(
            "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", [dbname]
        ).fetchone()
        size = int(row[0]) if row else None
    per_copy = f": ~{human_bytes(size)} per copy" if size else ": each copy costs its size"
    if version < CLONE_SINCE:
        return f"copies: file copy (PostgreSQL {version // 10000} cannot clone){per_copy}"
    if disk is None:
        return "copies: clone where the server's filesystem shares blocks (not visible here)"
    if disk.shares_blocks:
        return f"copies: clone on {disk.filesystem}: copies share blocks (instant, no extra disk)"
    return (
        f"copies: file copy on {disk.filesystem}{per_copy}; put VPBENCH_HOME on "
        f"{CLONING_FILESYSTEMS} for instant copies"
    )
