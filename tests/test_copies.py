"""Copies by cloning: on a real XFS filesystem with reflink (made here, loop-mounted, when the
tests run as root with loop devices and xfsprogs) a copy shares its source's blocks; on this
machine's own disk the same code copies. Both are the embedded PostgreSQL 18."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import traversable_tempdir
from vpbench.dataset.profiles import get_profile
from vpbench.server.backup import CLONE, TEMPLATE, create_backup, drop_backup
from vpbench.server.disk import data_disk, filesystem_type, shares_blocks
from vpbench.server.embedded import EmbeddedPostgres
from vpbench.server.target import ServerTarget
from vpbench.server.volume import (
    VolumeError,
    is_mount_point,
    make_volume,
    remove_volume,
    why_no_volume,
)
from vpbench.steps.copies import FULL_COPIES_AT_ONCE, copies_outlook, disk_need, seeded_bytes

TABLE_MB = 200


@pytest.fixture(scope="module")
def xfs_folder() -> Iterator[Path]:
    """A 3 GB volume made by ``vpbench db volume``'s code (a sparse XFS image with reflink,
    loop-mounted); unmounted and deleted after."""
    reason = why_no_volume()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="vpbench-xfs-", dir="/tmp"))
    mount = work / "mnt"
    try:
        work.chmod(0o755)
        try:
            make_volume(mount, 3 * 1024**3, image=work / "xfs.img")
        except VolumeError as exc:
            pytest.skip(f"cannot loop-mount here: {exc}")
        yield mount
    finally:
        remove_volume(mount, image=work / "xfs.img")
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _vpbench(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on the embedded server of ``home`` (no DSN from the environment)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VPBENCH_DSN", "DATABASE_URL") and not k.startswith("PG")}  # fmt: skip
    env["VPBENCH_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "vpbench", *args], capture_output=True,
                          text=True, env=env, check=False)  # fmt: skip


def test_a_series_that_will_not_fit_is_refused_before_anything_runs(
    on_xfs: ServerTarget, xfs_folder: Path
) -> None:
    """``large`` (~15 GB seeded) on a 3 GB volume: one line naming the need and the free
    space, exit 2, and no database made."""
    done = _vpbench(xfs_folder / "home", "steps", "--profile", "large", "--db", "wontfit")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "steps --profile large will not fit: it needs ~" in done.stderr
    assert "(copies share blocks)" in done.stderr and " free" in done.stderr
    with psycopg.connect(on_xfs.conninfo) as conn:
        made = conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'wontfit'")
        assert made.fetchone() == (0,)


def test_the_disk_a_series_needs_counts_full_copies_only_where_copies_are_full(
    on_xfs: ServerTarget, on_own_disk: ServerTarget
) -> None:
    """The twin of the refusal: ``tiny`` fits on the same volume, with no full copy counted
    where clones share blocks, and two where they do not (this machine's ext4)."""
    tiny = get_profile("tiny")
    with psycopg.connect(on_xfs.conninfo, autocommit=True) as conn:
        cloning = disk_need(conn, seeded_bytes(tiny), "anything")
    assert cloning.fits and cloning.full_copies == 0
    assert cloning.free_bytes is not None and cloning.free_bytes > 2 * 1024**3
    with psycopg.connect(on_own_disk.conninfo, autocommit=True) as conn:
        disk = data_disk(conn)
        assert disk is not None
        copying = disk_need(conn, seeded_bytes(tiny), "big")
    assert copying.full_copies == (0 if disk.shares_blocks else FULL_COPIES_AT_ONCE)
    assert copying.need_bytes > cloning.need_bytes or disk.shares_blocks


def test_db_volume_makes_a_cloning_home_and_removes_it(tmp_path: Path) -> None:
    """``vpbench db volume create`` mounts a sparse XFS image with reflink at VPBENCH_HOME
    (which then shares blocks); ``remove`` needs --yes, then unmounts and deletes it."""
    reason = why_no_volume()
    if reason:
        pytest.skip(reason)
    tmp_path.chmod(0o755)
    home = tmp_path / "home"
    image = tmp_path / "home.xfs"
    made = _vpbench(home, "db", "volume", "create", "--size", "400M")
    assert made.returncode == 0, made.stderr
    try:
        assert is_mount_point(home) and filesystem_type(home) == "xfs"
        assert shares_blocks(home) is True
        assert image.stat().st_blocks * 512 < image.stat().st_size  # sparse
        listing = ["losetup", "--list", "--noheadings", "--output", "DIO,BACK-FILE"]
        loops = subprocess.run(listing, capture_output=True, text=True, check=True)
        assert f"1 {image}" in " ".join(loops.stdout.split())  # cached once: direct I/O
        again = _vpbench(home, "db", "volume", "create")
        assert again.returncode == 0 and "mounted" in again.stdout
        refused = _vpbench(home, "db", "volume", "remove")
        assert refused.returncode == 2 and "pass --yes" in refused.stderr
        assert is_mount_point(home)
    finally:
        removed = _vpbench(home, "db", "volume", "remove", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not is_mount_point(home) and not image.exists()
    loops = subprocess.run(["losetup", "--list"], capture_output=True, text=True, check=True)
    assert str(image) not in loops.stdout  # the loop device is detached too


def test_db_volume_refuses_a_home_that_holds_something(tmp_path: Path) -> None:
    """Mounting over a folder that holds data would hide it: one line, exit 2, nothing made."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("data")
    done = _vpbench(home, "db", "volume", "create", "--size", "400M")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    reason = why_no_volume()
    expected = reason.split(":")[0] if reason else f"{home} is not empty"
    assert expected in done.stderr
    assert (home / "keep.txt").read_text() == "data" and not (tmp_path / "home.xfs").exists()
