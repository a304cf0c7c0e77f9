"""The unprivileged system user the embedded server runs as when vpbench runs as root."""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vpbench.errors import ServerError
from vpbench.server.embedded._process import child_env, last_lines

_LOG = logging.getLogger(__name__)

SERVER_USER = "vpbench"
"""The system user the server runs as when vpbench runs as root."""

HOME_HINT = "set VPBENCH_HOME to a folder others can traverse, e.g. /var/cache/vpbench"


@dataclass(frozen=True)
class Account:
    """The unprivileged user the server runs as."""

    uid: int
    gid: int


def server_account() -> Account | None:
    """As root, the system user the server runs as (created if missing); else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        _create_server_user()
        entry = pwd.getpwnam(SERVER_USER)
    return Account(entry.pw_uid, entry.pw_gid)


def check_traversable(home: Path) -> None:
    """As root, the server user must walk down to home: every existing folder needs o+x."""
    for folder in [*reversed(home.parents), home]:
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            return
        if not mode & stat.S_IXOTH:
            raise ServerError(
                f"the server user {SERVER_USER!r} cannot enter {folder}"
                f" (mode {stat.S_IMODE(mode):o}) on the way to {home}",
                hint=HOME_HINT,
            )


def give(path: Path, account: Account | None) -> None:
    """Make ``account`` the owner of ``path``; nothing to do when there is no account."""
    if account is not None:
        os.chown(path, account.uid, account.gid)


def run_as(
    account: Account | None, args: list[str], *, cwd: Path | str, timeout: float, hint: str
) -> tuple[int, str]:
    """Run a program as ``account`` (else as ourselves); output goes to a file, never a pipe.

    ``pg_ctl start`` leaves a postmaster behind that would inherit a pipe and could keep
    a reader waiting forever. ``hint`` goes with the error if the program times out.
    """
    _LOG.debug("running %s", " ".join(args))
    with tempfile.TemporaryFile() as output:
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=child_env(),
                timeout=timeout,
                start_new_session=True,
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(
                f"{Path(args[0]).name} {args[1]} did not finish within {timeout:.0f} s",
                hint=hint,
            ) from exc
        except OSError as exc:
            raise ServerError(f"cannot run {args[0]}: {exc.strerror}") from exc
        output.seek(0)
        return done.returncode, output.read().decode(errors="replace")


def _create_server_user() -> None:
    command = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"]
    command += ["--shell", "/usr/sbin/nologin", SERVER_USER]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise ServerError(
            f"cannot create the system user {SERVER_USER!r}: {exc.strerror}",
            hint="create it yourself, or run vpbench as an unprivileged user",
        ) from exc
    if done.returncode not in (0, 9):  # 9: created meanwhile by another process
        raise ServerError(
            f"useradd {SERVER_USER} failed: {last_lines(done.stderr, 1)}",
            hint="create it yourself, or run vpbench as an unprivileged user",
        )
    _LOG.info("created system user %s to run PostgreSQL", SERVER_USER)
