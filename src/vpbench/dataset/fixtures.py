"""Locate the reference fixtures (legacy schema, migrations, data profiles)."""

from __future__ import annotations

import os
from pathlib import Path

from vpbench.errors import FixtureError

_SOURCE_TREE_FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def fixtures_dir() -> Path:
    """``VPBENCH_FIXTURES`` if set, else the ``fixtures/`` folder of the source tree."""
    path = Path(os.environ.get("VPBENCH_FIXTURES") or _SOURCE_TREE_FIXTURES)
    if not path.is_dir():
        raise FixtureError(
            "fixtures folder not found",
            path=path,
            hint="install vpbench from its source tree (pip install -e .) or set VPBENCH_FIXTURES",
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
