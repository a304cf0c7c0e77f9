"""What vpbench's copies of a database cost here, said in one line: before a run (will a copy
be instant, or cost the database's size? will the series fit on the disk?) and after each
copy (how it was made, how long it took, how much disk it really took)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from vpbench.dataset.profiles import Profile
from vpbench.errors import BadInputError
from vpbench.reporting.units import human_bytes
from vpbench.server.backup import Backup
from vpbench.server.disk import CLONE_SINCE, DataDisk, data_disk, free_bytes_or_none

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
    size = _database_bytes(conn, dbname) if dbname is not None else None
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


SEEDED_BYTES_PER_ROW = {"quiz_attempts": 1340, "reflections": 270, "users": 225,
                        "videos": 280, "courses": 1850}  # fmt: skip
"""a seeded legacy table's bytes per row, indexes and TOAST included (``small``, seed 1,
PostgreSQL 18: 133 MB of quiz attempts for 98k rows)"""
EMPTY_DATABASE_BYTES = 8 * 1024**2
GROWTH = 0.25
"""what the reference series adds to the working database (new columns, indexes, the WAL
of its rewrites): ``large`` grows from ~14 GB seeded to ~17 GB"""
FULL_COPIES_AT_ONCE = 2
"""copies a step holds at once where they are full: the backup and the rehearsal's copy,
then the backup and the copy of the state after"""


class DiskSpaceError(BadInputError):
    """The series will not fit on the server's disk; nothing was changed."""


@dataclass(frozen=True)
class DiskNeed:
    """What a ``steps`` series will take of the server's disk, before it runs."""

    database_bytes: int
    """the seeded database (estimated from the profile's rows)"""
    full_copies: int
    """copies that cost the database's size, held at once (0 where copies share blocks)"""
    need_bytes: int
    free_bytes: int | None
    """None where the server's disk is not visible here"""

    @property
    def fits(self) -> bool:
        return self.free_bytes is None or self.need_bytes <= self.free_bytes

    def describe(self) -> str:
        copies = (f" + {self.full_copies} full copies" if self.full_copies
                  else " (copies share blocks)")  # fmt: skip
        free = "free space not visible" if self.free_bytes is None else (
            f"{human_bytes(self.free_bytes)} free")  # fmt: skip
        return (f"needs ~{human_bytes(self.need_bytes)} of disk: the database "
                f"~{human_bytes(self.database_bytes)}{copies} + {GROWTH:.0%} for what the "
                f"migrations add; {free}")  # fmt: skip


def seeded_bytes(profile: Profile) -> int:
    """The size of ``profile``'s seeded database, from its rows."""
    rows = {
        "quiz_attempts": profile.quiz_attempts,
        "reflections": profile.reflections,
        "users": profile.users,
        "videos": profile.videos,
        "courses": profile.courses,
    }
    return EMPTY_DATABASE_BYTES + sum(SEEDED_BYTES_PER_ROW[t] * n for t, n in rows.items())


def disk_need(conn: psycopg.Connection[Any], size: int, dbname: str) -> DiskNeed:
    """What a database of ``size`` bytes made in ``dbname`` (seeded, or copied from a
    team's) and the series run there will take of the disk of ``conn``'s server: the
    database, plus two full copies of it unless copies share blocks there, plus what the
    migrations add; the space ``dbname`` holds now is freed first and counts as free."""
    disk = data_disk(conn)
    full = 0 if _clones(conn, disk) else FULL_COPIES_AT_ONCE
    free = free_bytes_or_none(disk.data_dir) if disk else None
    if free is not None:
        free += _database_bytes(conn, dbname) or 0
    need = int(size * (1 + full + GROWTH))
    return DiskNeed(size, full, need, free)


def check_disk(conn: psycopg.Connection[Any], size: int, dbname: str, run: str) -> DiskNeed:
    """``disk_need``, refused with one line naming the ``run`` when it will not fit."""
    need = disk_need(conn, size, dbname)
    if not need.fits:
        raise DiskSpaceError(
            f"{run} will not fit: it {need.describe()}",
            hint=f"free some space, or put VPBENCH_HOME on {CLONING_FILESYSTEMS} "
            "(vpbench db volume create) so copies take no space",
        )
    return need


def _clones(conn: psycopg.Connection[Any], disk: DataDisk | None) -> bool:
    return conn.info.server_version >= CLONE_SINCE and disk is not None and bool(disk.shares_blocks)


def _database_bytes(conn: psycopg.Connection[Any], dbname: str) -> int | None:
    """``pg_database_size`` of ``dbname``; None when there is no such database."""
    row = conn.execute(
        "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", [dbname]
    ).fetchone()
    return int(row[0]) if row else None
