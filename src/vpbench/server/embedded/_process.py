"""A PostgreSQL server's processes, found through ``postmaster.pid`` and ``/proc``.

Also the free ports and clean environment it is started with. Linux only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vpbench.errors import ServerError

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PidFile:
    """The fields of ``postmaster.pid`` that vpbench uses."""

    pid: int
    port: int | None


def read_pid_file(data_dir: Path) -> PidFile | None:
    """The postmaster named in ``data_dir/postmaster.pid``, if the file names one."""
    path = data_dir / "postmaster.pid"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServerError(
            f"cannot read {path}: {exc.strerror}",
            hint="run vpbench as the user that created this home, or set VPBENCH_HOME",
        ) from exc
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None  # being written, or garbage: no live postmaster can be named by it
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return PidFile(pid, port)


def _is_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie whose parent never reaps it does not count."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] not in {"Z", "X"}


def wait_until_dead(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to stop; True if it did."""
    deadline = time.monotonic() + timeout
    while _is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def works_in(pid: int, folder: Path) -> bool:
    """True if ``pid`` is alive and has ``folder`` as working folder (pids get reused)."""
    if not _is_alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/cwd").readlink() == folder
    except OSError:
        return False


def _server_processes(data_dir: Path) -> list[int]:
    """Live processes running a ``postgres`` binary with ``data_dir`` as working folder."""
    found: list[int] = []
    wanted = str(data_dir)
    with contextlib.suppress(FileNotFoundError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if str((entry / "cwd").readlink()) != wanted:
                    continue
                exe = str((entry / "exe").readlink())
            except OSError:
                continue
            if Path(exe.removesuffix(" (deleted)")).name == "postgres" and _is_alive(
                int(entry.name)
            ):
                found.append(int(entry.name))
    return found


def clear_leftovers(data_dir: Path) -> bool:
    """After the postmaster is gone: wait for its children, kill stragglers, drop lock files.

    A postmaster killed with SIGKILL leaves children that hold its shared memory for a
    moment, and lock files naming its pid; until it is reaped that pid still answers
    ``kill(pid, 0)``, so a new postmaster would take it for a running one. True if any
    server processes were left.
    """
    found = bool(_server_processes(data_dir))
    remaining = _wait_for_exit(data_dir, 10.0)
    if remaining:
        _LOG.warning("killing leftover PostgreSQL processes %s", remaining)
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        remaining = _wait_for_exit(data_dir, 5.0)
        if remaining:
            raise ServerError(
                f"PostgreSQL processes {remaining} of {data_dir} do not exit",
                hint="kill them, then try again",
            )
    for lock_file in [data_dir / "postmaster.pid", *data_dir.glob(".s.PGSQL.*.lock")]:
        if lock_file.exists():
            _LOG.info("removing stale %s", lock_file)
            lock_file.unlink(missing_ok=True)
    return found


def port_is_free(host: str, port: int) -> bool:
    """True if the server could listen on ``port`` (it too sets SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A TCP port on ``host`` that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def child_env() -> dict[str, str]:
    """The environment minus libpq's ``PG*`` variables, which would redirect the programs."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def last_lines(text: str, count: int) -> str:
    """The last ``count`` non-empty lines of a program's output, joined on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"


def _wait_for_exit(data_dir: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (remaining := _server_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return remaining
