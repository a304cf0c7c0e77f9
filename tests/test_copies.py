"""Copies by cloning: on a real XFS filesystem with reflink (made here, loop-mounted, when the
tests run as root with loop devices and xfsprogs) a copy shares its source's blocks; on this
machine's own disk the same code copies. Both are the embedded PostgreSQL 18."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import traversable_tempdir
from vpbench.server.backup import CLONE, TEMPLATE, create_backup, drop_backup
from vpbench.server.disk import data_disk, filesystem_type, shares_blocks
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import ServerTarget
from vpbench.steps.copies import copies_outlook

TABLE_MB = 200


def _cloning_filesystem_unavailable() -> str | None:
    """Why an XFS filesystem with reflink cannot be made here, or None."""
    if os.geteuid() != 0:
        return "making a loop-mounted filesystem needs root"
    if not shutil.which("mkfs.xfs"):
        return "mkfs.xfs not found (Debian package xfsprogs; .ci/run installs it)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return None


@pytest.fixture(scope="module")
def xfs_folder() -> Iterator[Path]:
    """A 3 GB sparse file formatted XFS with reflink, mounted; unmounted and deleted after."""
    reason = _cloning_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="vpbench-xfs-", dir="/tmp"))
    image, mount = work / "xfs.img", work / "mnt"
    mount.mkdir()
    with image.open("wb") as handle:
        handle.truncate(3 * 1024**3)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=False,
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip(f"cannot loop-mount here: {mounted.stderr.strip()}")
    try:
        work.chmod(0o755)
        mount.chmod(0o755)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def _server(home: Path) -> Iterator[ServerTarget]:
    server = EmbeddedPostgres(home)
    try:
        status = server.start()
        target = ServerTarget(status.dsn("postgres"), "embedded server")
        with psycopg.connect(status.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE big")
        with psycopg.connect(status.dsn("big"), autocommit=True) as conn:
            rows = TABLE_MB * 1024 * 1024 // 70  # ~70 bytes a row on disk
            conn.execute(
                "CREATE TABLE t AS SELECT g, md5(g::text) AS m FROM generate_series(1, %s) g",
                [rows],
            )
        yield target
    finally:
        server.stop()


@pytest.fixture(scope="module")
def on_xfs(xfs_folder: Path) -> Iterator[ServerTarget]:
    """The embedded server with its data on the XFS filesystem, holding a ~200 MB database."""
    home = xfs_folder / "home"
    home.mkdir(mode=0o755)
    yield from _server(home)


@pytest.fixture(scope="module")
def on_own_disk() -> Iterator[ServerTarget]:
    """The same on this machine's own disk (ext4 here: no shared blocks)."""
    home = traversable_tempdir("vpbench-copies-")
    try:
        yield from _server(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _contents(target: ServerTarget, dbname: str) -> tuple[object, ...]:
    with psycopg.connect(target.for_database(dbname)) as conn:
        row = conn.execute("SELECT count(*), sum(g), md5(string_agg(m, '' ORDER BY g)) FROM t")
        found = row.fetchone()
    assert found is not None
    return tuple(found)


def test_a_clone_on_xfs_shares_blocks_and_equals_its_source(on_xfs: ServerTarget) -> None:
    with psycopg.connect(on_xfs.conninfo, autocommit=True) as conn:
        disk = data_disk(conn)
        assert disk is not None and disk.filesystem == "xfs" and disk.shares_blocks
        assert "copies share blocks" in copies_outlook(conn)
    copy = create_backup(on_xfs, "big", "clone")
    try:
        assert copy.method == CLONE
        assert copy.source_bytes is not None and copy.source_bytes > 150 * 1024**2
        # No data blocks added: free space moved by a few MB at most (catalog, WAL).
        assert copy.added_bytes is not None and abs(copy.added_bytes) < 16 * 1024**2, copy
        assert _contents(on_xfs, copy.name) == _contents(on_xfs, "big")
    finally:
        drop_backup(on_xfs, copy)


def test_on_the_machines_own_disk_the_same_code_copies(on_own_disk: ServerTarget) -> None:
    """The twin: where blocks cannot be shared the clone request copies them (ext4 here):
    the copy takes about the database's size, and says so beforehand."""
    with psycopg.connect(on_own_disk.conninfo, autocommit=True) as conn:
        disk = data_disk(conn)
        assert disk is not None
        if disk.shares_blocks:
            pytest.skip(f"this machine's own disk ({disk.filesystem}) shares blocks")
        outlook = copies_outlook(conn, "big")
        assert f"file copy on {disk.filesystem}" in outlook and "per copy" in outlook
        assert "VPBENCH_HOME" in outlook
    copy = create_backup(on_own_disk, "big", "copy")
    try:
        assert copy.method in (CLONE, TEMPLATE)
        assert copy.added_bytes is not None and copy.source_bytes is not None
        assert copy.added_bytes > 0.8 * copy.source_bytes, copy
        assert _contents(on_own_disk, copy.name) == _contents(on_own_disk, "big")
    finally:
        drop_backup(on_own_disk, copy)


def test_block_sharing_is_probed_not_guessed(tmp_path: Path) -> None:
    """The probe answers for the folder it is given, by trying a clone there."""
    own = shares_blocks(tmp_path)
    assert own in (True, False)
    assert filesystem_type(tmp_path) != "unknown"
    assert shares_blocks(tmp_path / "missing") is None  # cannot be written: unknown
