"""A copy-on-write volume for the embedded server: a sparse file formatted XFS with reflink
and loop-mounted at the server's home, so that PostgreSQL 18's ``file_copy_method =
clone`` makes every copy vpbench takes instant and free of extra disk.

Linux only, as root, with ``mkfs.xfs`` (Debian package ``xfsprogs``) and loop devices.
Anywhere else the answer is a refusal saying so and what to do instead: put VPBENCH_HOME on
a filesystem that shares blocks (XFS with reflink, btrfs, APFS, OpenZFS >= 2.2). The
image is sparse: it takes only the disk the server writes, up to its size. A loop mount
does not survive a reboot: ``vpbench db volume create`` again mounts the existing image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vpbench.errors import BadInputError, VpbenchError
from vpbench.server.disk import filesystem_type

IMAGE_SUFFIX = ".xfs"
MIN_BYTES = 300 * 1024**2
"""XFS's own minimum is 300 MB"""


class VolumeError(VpbenchError):
    """Making, mounting or removing the volume failed."""


class VolumeRefusedError(BadInputError):
    """A volume cannot be made here (not Linux, not root, no xfsprogs or loop devices), or
    not where it was asked for."""


@dataclass(frozen=True)
class Volume:
    """A mounted volume: its image file and where it is mounted."""

    image: Path
    mount_point: Path
    size_bytes: int
    created: bool
    """False when an existing image was mounted again (or was mounted already)"""


def image_for(home: Path) -> Path:
    """The image file beside ``home``: ``/var/cache/vpbench.xfs`` for ``/var/cache/vpbench``."""
    return home.with_name(home.name + IMAGE_SUFFIX)


def why_no_volume() -> str | None:
    """Why a loop-mounted XFS volume cannot be made on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return f"a loop-mounted XFS volume needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "making and mounting a loop volume needs root"
    if not shutil.which("mkfs.xfs"):
        return "mkfs.xfs not found: install xfsprogs (apt-get install xfsprogs)"
    if not Path("/dev/loop-control").exists():
        return "this machine has no loop devices (/dev/loop-control)"
    return None


def is_mount_point(path: Path) -> bool:
    """Whether a filesystem is mounted exactly at ``path``."""
    return path.is_dir() and os.path.ismount(path)


def make_volume(home: Path, size_bytes: int | None = None, image: Path | None = None) -> Volume:
    """Mount an XFS volume with reflink at ``home``: the existing image if there is one, else
    a new sparse one of ``size_bytes`` (default: the free space where the image goes)."""
    image = image or image_for(home)
    if is_mount_point(home) and filesystem_type(home) == "xfs":
        return Volume(image, home, _size(image), created=False)
    reason = why_no_volume()
    if reason:
        raise VolumeRefusedError(reason, hint="or set VPBENCH_HOME to a folder on XFS "
                                 "(reflink), btrfs, APFS or OpenZFS >= 2.2")  # fmt: skip
    if home.exists() and any(home.iterdir()):
        raise VolumeRefusedError(
            f"{home} is not empty: a volume mounted there would hide what it holds",
            hint="stop the embedded server (vpbench db stop) and move or delete that folder, "
            "or set VPBENCH_HOME to an empty folder",
        )
    created = not image.exists()
    if created:
        image.parent.mkdir(parents=True, exist_ok=True)
        size = size_bytes or shutil.disk_usage(image.parent).free
        if size < MIN_BYTES:
            raise VolumeRefusedError(
                f"a volume of {size / 1024**2:.0f} MB is too small (XFS needs 300 MB)",
                path=image,
            )
        with image.open("wb") as handle:
            handle.truncate(size)
        _run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], image, undo=image)
    home.mkdir(parents=True, exist_ok=True)
    # With direct I/O the image's pages are cached once, by XFS, and not a second time by
    # the filesystem holding the image: a database larger than half the memory would
    # otherwise be read from disk far sooner than on a disk of its own.
    device = _run(["losetup", "--find", "--show", "--direct-io=on", str(image)], image,
                  undo=image if created else None)  # fmt: skip
    try:
        _run(["mount", device, str(home)], image)
    except VolumeError:
        subprocess.run(["losetup", "--detach", device], check=False)
        if created:
            image.unlink(missing_ok=True)
        raise
    home.chmod(0o755)  # the server's own account must reach its folders
    return Volume(image, home, _size(image), created)


def remove_volume(home: Path, image: Path | None = None) -> bool:
    """Unmount the volume at ``home`` and delete its image; False when there was none."""
    image = image or image_for(home)
    mounted = is_mount_point(home)
    if not mounted and not image.exists():
        return False
    if mounted:
        _run(["umount", "--detach-loop", str(home)], image)
    image.unlink(missing_ok=True)
    return True


def _size(image: Path) -> int:
    return image.stat().st_size if image.exists() else 0


def _run(command: list[str], image: Path, undo: Path | None = None) -> str:
    """Run ``command``; its output, or a VolumeError naming the image (deleting ``undo``)."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if undo is not None:
            undo.unlink(missing_ok=True)
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise VolumeError(f"{command[0]} failed: {last}", path=image)
    return done.stdout.strip()
