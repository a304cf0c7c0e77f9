"""The migration folder format: one sub-folder per step, checksummed.

A migrations folder holds one sub-folder per step, applied in name order::

    NNNN_short_name/
        up.sql          the change, run as one transaction
        down.sql        restores the previous schema *and* data
        migration.toml  title, why, fixes (audit checks), rewrites_table, transactional,
                        changes_results, max_stall + downtime, breaks_old_app
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpbench.errors import FixtureError

MIGRATION_ID = re.compile(r"^\d{4}_[a-z0-9_]+$")


@dataclass(frozen=True)
class Migration:
    """One step of the series, as found on disk."""

    id: str
    path: Path
    title: str
    why: str
    fixes: tuple[str, ...]
    rewrites_table: bool
    transactional: bool
    changes_results: tuple[str, ...]
    """queries whose results this step changes on purpose (it fixes the data they read)"""
    up_sql: str
    down_sql: str
    max_stall_ms: float | None = None
    """the longest stall of the live app this step is allowed (``max_stall``), when it
    differs from the run's budget: an accepted downtime, declared with its ``downtime`` why"""
    downtime: str = ""
    breaks_old_app: str = ""
    """why the app deployed before this step cannot keep running on its schema (``vpbench
    steps`` finds which of its queries and writes break; undeclared, that fails the step)"""

    def stall_budget_ms(self, default_ms: float) -> float:
        """The longest stall of the live app this step may cause: its declared
        ``max_stall``, else the run's ``default_ms``."""
        return self.max_stall_ms if self.max_stall_ms is not None else default_ms

    @property
    def checksum(self) -> str:
        """sha256 of up.sql and down.sql: an edited, already-applied step is detected."""
        digest = hashlib.sha256(self.up_sql.encode())
        digest.update(b"\0")
        digest.update(self.down_sql.encode())
        return digest.hexdigest()


def read_folders(folder: Path) -> tuple[Migration, ...]:
    """Every vpbench-format step in ``folder``, in name order."""
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not MIGRATION_ID.match(path.name):
            raise FixtureError(
                f"migration folder name {path.name!r} is not NNNN_short_name", path=path
            )
        found.append(_read_migration(path))
    return tuple(found)


def _read_migration(path: Path) -> Migration:
    files = {name: path / name for name in ("up.sql", "down.sql", "migration.toml")}
    for file in files.values():
        if not file.is_file():
            raise FixtureError(f"migration {path.name} has no {file.name}", path=file)
    meta_path = files["migration.toml"]
    try:
        meta: dict[str, Any] = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FixtureError(f"invalid TOML: {exc}", path=meta_path) from None
    return Migration(
        id=path.name,
        path=path,
        title=str(meta.get("title", path.name)),
        why=str(meta.get("why", "")),
        fixes=tuple(str(c) for c in meta.get("fixes", [])),
        rewrites_table=bool(meta.get("rewrites_table", False)),
        transactional=bool(meta.get("transactional", True)),
        changes_results=tuple(str(q) for q in meta.get("changes_results", [])),
        up_sql=files["up.sql"].read_text(encoding="utf-8"),
        down_sql=files["down.sql"].read_text(encoding="utf-8"),
        breaks_old_app=str(meta.get("breaks_old_app", "")).strip(),
        **_stall_budget(meta, meta_path),
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min)\s*$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "min": 60_000.0}


def _stall_budget(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``max_stall = "5s"`` with ``downtime = "why"``: a step's own stall budget."""
    if "max_stall" not in meta:
        return {}
    match = _DURATION.match(str(meta["max_stall"]))
    if match is None:
        raise FixtureError(
            f"max_stall {meta['max_stall']!r} is not a duration such as 500ms, 5s or 2min",
            path=path,
        )
    why = str(meta.get("downtime", "")).strip()
    if not why:
        raise FixtureError(
            'max_stall needs a downtime = "..." saying why the app may stall that long',
            path=path,
        )
    return {"max_stall_ms": float(match[1]) * _UNIT_MS[match[2]], "downtime": why}
