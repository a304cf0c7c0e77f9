"""What makes runs comparable: server version and settings, data, schema state, machine, code.

Never records a password: the server is described as ``host:port/db`` and its source.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from vpbench import __version__
from vpbench.server.maintenance import OWN_SCHEMA, maintenance_state

SETTINGS = (
    "shared_buffers",
    "work_mem",
    "jit",
    "random_page_cost",
    "effective_cache_size",
    "max_parallel_workers_per_gather",
    "maintenance_work_mem",
    "max_wal_size",
)


def git_commit(folder: Path | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def server_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name", [list(SETTINGS)]
    ).fetchall()
    version = conn.execute("SELECT current_setting('server_version')").fetchone()
    number = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return {
        "server_version": version[0] if version else None,
        "server_version_num": number[0] if number else None,
        "settings": dict(rows),
    }


def seed_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Profile and seed from the seeding ledger, if the database was seeded by vpbench."""
    exists = conn.execute("SELECT to_regclass('vpbench.seed_info')").fetchone()
    if not exists or exists[0] is None:
        return {}
    row = conn.execute(
        "SELECT profile, seed, dirty_rates, seeded_at::text FROM vpbench.seed_info"
    ).fetchone()
    if row is None:
        return {}
    return {"profile": row[0], "seed": row[1], "dirty_rates": row[2], "seeded_at": row[3]}


def database_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Which database this is (its OID tells a recreated database from the same name) and
    each table's VACUUM/ANALYZE counters, so ``compare`` can tell whether maintenance ran
    between two runs of it."""
    row = conn.execute(
        "SELECT oid, datname FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    return {
        "oid": int(row[0]) if row else None,
        "name": row[1] if row else None,
        "maintenance": {
            name: table.to_dict()
            for name, table in maintenance_state(conn).items()
            if not name.startswith(f"{OWN_SCHEMA}.")
        },
    }


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def collect_metadata(
    conn: psycopg.Connection[Any],
    *,
    server: str,
    label: str | None,
    options: dict[str, Any],
    workload_paths: list[str],
    applied_migrations: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "vpbench_version": __version__,
        "git_commit": git_commit(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": label,
        "server": server,
        "postgres": server_info(conn),
        "seed": seed_info(conn),
        "database": database_info(conn),
        "applied_migrations": list(applied_migrations),
        "options": options,
        "workloads": [{"path": p, "sha256": file_digest(p)} for p in workload_paths],
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }
