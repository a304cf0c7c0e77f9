"""Locate the reference files: the legacy schema and migrations (``fixtures/``) and the
workload files with the legacy app (``workloads/``).

They live at the top of the source tree and are built into the wheel under
``vpbench/_reference/`` (see ``pyproject.toml``); an installed vpbench reads its own copy
through ``importlib.resources``, an editable install or a checkout the source tree's.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from vpbench.errors import FixtureError

_SOURCE_TREE = Path(__file__).resolve().parents[3]


def reference_dir() -> Path:
    """The folder that holds ``fixtures/`` and ``workloads/``: the installed package's copy,
    else the source tree."""
    installed = Path(str(files("vpbench") / "_reference"))
    return installed if (installed / "fixtures").is_dir() else _SOURCE_TREE


def fixtures_dir() -> Path:
    """``VPBENCH_FIXTURES`` if set, else the reference ``fixtures/`` folder."""
    path = Path(os.environ.get("VPBENCH_FIXTURES") or reference_dir() / "fixtures")
    if not path.is_dir():
        raise FixtureError(
            "fixtures folder not found",
            path=path,
            hint="reinstall vpbench (pip install vpbench), or set VPBENCH_FIXTURES",
        )
    return path


def default_workload_paths() -> list[Path]:
    """The reference workload files (``workloads/*.toml`` beside ``fixtures/``)."""
    return sorted((fixtures_dir().parent / "workloads").glob("*.toml"))


def legacy_schema_sql() -> str:
    """The reference legacy schema: what the learning app's database looks like today."""
    path = fixtures_dir() / "schema" / "legacy.sql"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FixtureError(f"cannot read the legacy schema: {exc.strerror}", path=path) from None
