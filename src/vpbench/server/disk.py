"""The disk under a server's data directory, where vpbench can see it: free space, the
filesystem, and whether files there can share blocks (reflink), which is what makes a
PostgreSQL 18 ``file_copy_method = clone`` copy instant and free of extra disk.

Only a server on this machine has a disk vpbench can see (the embedded one, or a DSN on
localhost whose ``data_directory`` exists here); for any other every answer is unknown.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

CLONE_SINCE = 180000
"""``file_copy_method = clone``: PostgreSQL 18"""
_FICLONE = 0x40049409
"""Linux ``ioctl`` that makes one file share another's blocks (XFS with reflink, btrfs)"""
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


@dataclass(frozen=True)
class DataDisk:
    """The filesystem holding a server's data directory."""

    data_dir: Path
    filesystem: str
    """``xfs``, ``ext4``, ``btrfs``... as /proc/mounts names it"""
    shares_blocks: bool | None
    """a clone there shares blocks with its source (None: could not be probed)"""


def data_directory(conn: psycopg.Connection[Any]) -> Path | None:
    """The data directory of the server ``conn`` is connected to, when that server is on
    this machine and the directory can be read (a superuser or ``pg_read_all_settings``);
    else None."""
    host = conn.info.host or ""
    if not (host.startswith("/") or host in _LOCAL_HOSTS):
        return None
    try:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except psycopg.Error:
        return None
    path = Path(str(row[0])) if row else None
    return path if path is not None and path.is_dir() else None


def data_disk(conn: psycopg.Connection[Any]) -> DataDisk | None:
    """The disk of the server ``conn`` is connected to, with its filesystem and a probe of
    block sharing, where its data directory is visible here; else None."""
    path = data_directory(conn)
    if path is None:
        return None
    return DataDisk(path, filesystem_type(path), shares_blocks(path.parent))


def filesystem_type(path: Path) -> str:
    """The type of the filesystem mounted at ``path`` or its nearest parent (``unknown``
    where /proc/mounts cannot be read)."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return "unknown"
    resolved, best, kind = str(path.resolve()), "", "unknown"
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def shares_blocks(folder: Path) -> bool | None:
    """Whether a file in ``folder`` can be cloned into another sharing its blocks (FICLONE);
    None where ``folder`` cannot be written or the system has no such call."""
    try:
        with (
            tempfile.NamedTemporaryFile(dir=folder, prefix=".vpbench-clone-") as source,
            tempfile.NamedTemporaryFile(dir=folder, prefix=".vpbench-clone-") as clone,
        ):
            source.write(b"\0" * 4096)
            source.flush()
            fcntl.ioctl(clone.fileno(), _FICLONE, source.fileno())
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            return False
        log.info("cannot probe %s for block sharing: %s", folder, exc)
        return None
    return True


def free_bytes_or_none(folder: Path | None) -> int | None:
    """Free bytes of the filesystem holding ``folder``; None where it is not visible."""
    if folder is None:
        return None
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None
