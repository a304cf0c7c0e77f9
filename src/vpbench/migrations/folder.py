"""A migration as vpbench runs it, and vpbench's own folder format: one sub-folder per step,
checksummed.

A migrations folder holds one sub-folder per step, applied in name order::

    NNNN_short_name/
        up.sql          the change, run as one transaction
        down.sql        restores the previous schema *and* data
        migration.toml  title, why, fixes (audit checks), rewrites_table, transactional,
                        changes_results, max_stall + downtime, breaks_old_app

The other layouts (alembic projects, numbered SQL pairs) give the same fields in an
optional side file read by :func:`side_fields`.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpbench.errors import MigrationsFormatError, read_text_file
from vpbench.migrations.statements import read_sql_file, split_statements

MIGRATION_ID = re.compile(r"^\d{4}_[a-z0-9_]+$")
SHORT_ID_CHARS = 4


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
    deploy_before: str = ""
    """a later step (in the series or still to be written) that must not run before the
    app with this step's new queries is deployed: the contract that drops what the app
    deployed before this step still uses"""
    side_file: Path | None = None
    """the TOML file the fields above came from, where there is one"""
    layout: str = "vpbench folder"
    """where it came from: vpbench folder, numbered SQL pair or alembic revision"""
    files: tuple[Path, Path] | None = None
    """the files of ``up`` and ``down`` when they are not ``path/up.sql`` and
    ``path/down.sql`` (a numbered pair's files; an alembic revision's module, twice)"""
    rendered: bool = False
    """its SQL was rendered from code (alembic): a line number is one of the rendered SQL"""
    online: str = ""
    """why its code runs online, through alembic on vpbench's connection, instead of as SQL
    (an alembic revision that reads the database as it runs); "" for SQL steps"""
    project: Path | None = None
    """the ``alembic.ini`` of an online revision"""

    def script_file(self, direction: str) -> Path:
        """The file ``direction``'s SQL comes from."""
        if self.files is not None:
            return self.files[0 if direction == "up" else 1]
        return self.path / f"{direction}.sql"

    def located(self, direction: str, line: int) -> tuple[Path, int | None, str]:
        """Where a problem at ``line`` of ``direction``'s script is: its file and line, or
        for SQL rendered from code (an alembic revision) the module and, as words to add to
        the message, the line of the rendered SQL."""
        path = self.script_file(direction)
        if self.rendered:
            return path, None, f" (line {line} of its rendered SQL)"
        return path, line, ""

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


def short_ids(ids: Iterable[str]) -> dict[str, str]:
    """Each id by its shortest beginning, of four characters or more, that no other id
    shares: ``0001`` in the reference series, ``000056`` beside ``000057_b``, the whole id
    where nothing shorter tells it apart. For a narrow label (a report's column)."""
    every = list(ids)
    labels = {}
    for one in every:
        length = SHORT_ID_CHARS
        while length < len(one) and any(o != one and o.startswith(one[:length]) for o in every):
            length += 1
        labels[one] = one[:length]
    return labels


def read_folders(folder: Path) -> tuple[Migration, ...]:
    """Every vpbench-format step in ``folder``, in name order."""
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not MIGRATION_ID.match(path.name):
            raise MigrationsFormatError(
                f"migration folder name {path.name!r} is not NNNN_short_name", path=path
            )
        found.append(_read_migration(path))
    return tuple(found)


def _read_migration(path: Path) -> Migration:
    files = {name: path / name for name in ("up.sql", "down.sql", "migration.toml")}
    for file in files.values():
        if not file.is_file():
            raise MigrationsFormatError(f"migration {path.name} has no {file.name}", path=file)
    up_sql = read_sql_file(files["up.sql"])
    if not split_statements(up_sql):
        raise MigrationsFormatError(f"migration {path.name} has no statement in up.sql",
                                    path=files["up.sql"])  # fmt: skip
    return Migration(
        id=path.name,
        path=path,
        up_sql=up_sql,
        down_sql=read_sql_file(files["down.sql"]),
        **side_fields(files["migration.toml"], default_title=path.name),
    )


SIDE_KEYS = frozenset({"title", "why", "notes", "fixes", "rewrites_table", "transactional",
                       "changes_results", "max_stall", "downtime", "breaks_old_app",
                       "deploy_before"})  # fmt: skip
"""what ``migration.toml`` (or a side file beside a revision or a pair) may say (``notes``
is for its readers)"""


def side_fields(
    meta_path: Path, *, default_title: str, default_why: str = "", transactional: bool = True
) -> dict[str, Any]:
    """A step's fields from its TOML file (``migration.toml``, or the optional side file of
    an alembic revision or a numbered pair: defaults where it is absent)."""
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = tomllib.loads(read_text_file(meta_path, "side file", "TOML"))
        except tomllib.TOMLDecodeError as exc:
            raise MigrationsFormatError(f"invalid TOML: {exc}", path=meta_path) from None
    unknown = sorted(set(meta) - SIDE_KEYS)
    if unknown:
        raise MigrationsFormatError(
            f"unknown key {unknown[0]!r}; known: {', '.join(sorted(SIDE_KEYS))}", path=meta_path
        )
    return {
        "title": str(meta.get("title", default_title)),
        "why": str(meta.get("why", default_why)),
        "fixes": tuple(str(c) for c in meta.get("fixes", [])),
        "rewrites_table": bool(meta.get("rewrites_table", False)),
        "transactional": bool(meta.get("transactional", transactional)),
        "changes_results": tuple(str(q) for q in meta.get("changes_results", [])),
        "breaks_old_app": str(meta.get("breaks_old_app", "")).strip(),
        "deploy_before": str(meta.get("deploy_before", "")).strip(),
        "side_file": meta_path if meta else None,
        **_stall_budget(meta, meta_path),
    }


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min)\s*$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "min": 60_000.0}


def _stall_budget(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``max_stall = "5s"`` with ``downtime = "why"``: a step's own stall budget."""
    if "max_stall" not in meta:
        return {}
    match = _DURATION.match(str(meta["max_stall"]))
    if match is None:
        raise MigrationsFormatError(
            f"max_stall {meta['max_stall']!r} is not a duration such as 500ms, 5s or 2min",
            path=path,
        )
    why = str(meta.get("downtime", "")).strip()
    if not why:
        raise MigrationsFormatError(
            'max_stall needs a downtime = "..." saying why the app may stall that long',
            path=path,
        )
    return {"max_stall_ms": float(match[1]) * _UNIT_MS[match[2]], "downtime": why}
