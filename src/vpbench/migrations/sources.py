"""Where a series of migrations comes from: the folder, project or files a user names, or the
reference series shipped with vpbench."""

from __future__ import annotations

from pathlib import Path

from vpbench.dataset.fixtures import fixtures_dir
from vpbench.errors import FixtureError
from vpbench.migrations.folder import Migration, read_folders


def default_migrations_dir() -> Path:
    return fixtures_dir() / "migrations"


def discover_migrations(folder: Path | None = None) -> tuple[Migration, ...]:
    """Every migration in ``folder`` (default: the reference series), in order."""
    folder = folder if folder is not None else default_migrations_dir()
    if not folder.is_dir():
        raise FixtureError("migrations folder not found", path=folder)
    return read_folders(folder)


def migration_ids(folder: Path | None = None) -> tuple[str, ...]:
    return tuple(m.id for m in discover_migrations(folder))
