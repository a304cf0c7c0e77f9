"""Where a series of migrations comes from: vpbench's own folders, an alembic project or a
folder of numbered SQL pairs (found by what the path holds, or named), or the reference
series shipped with vpbench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from vpbench.dataset.fixtures import fixtures_dir
from vpbench.errors import MigrationsFormatError
from vpbench.migrations.alembic_project import alembic_ini, read_alembic
from vpbench.migrations.folder import Migration, read_folders
from vpbench.migrations.sql_pairs import holds_pairs, read_pairs
from vpbench.migrations.statements import ScriptShapeError, check_script_shape

Layout = Literal["auto", "vpbench", "alembic", "sql"]
LAYOUTS: tuple[str, ...] = get_args(Layout)


@dataclass(frozen=True)
class MigrationSource:
    """A migrations path and the layout it is read as (``auto``: found by what it holds)."""

    path: Path
    layout: Layout = "auto"


@dataclass(frozen=True)
class ReadSeries:
    """A series already read, e.g. ``ci pr``'s: the base's migrations as a database that
    ran the base has them, then the head's new ones."""

    migrations: tuple[Migration, ...]
    path: Path
    """the head's migrations, where the files are"""


MigrationsLocation = Path | MigrationSource | ReadSeries
"""what ``--migrations`` names: a path read by what it holds, or a path and its layout; or
a series already read"""


def default_migrations_dir() -> Path:
    return fixtures_dir() / "migrations"


def is_reference(location: MigrationsLocation | None) -> bool:
    """``location`` is the reference series shipped with vpbench."""
    if location is None:
        return True
    return _source(location).path.resolve() == default_migrations_dir().resolve()


def discover_migrations(location: MigrationsLocation | None = None) -> tuple[Migration, ...]:
    """Every migration at ``location`` (default: the reference series), in order."""
    if isinstance(location, ReadSeries):
        return location.migrations
    source = _source(location)
    path = source.path
    if not path.exists():
        raise MigrationsFormatError("migrations folder not found", path=path)
    layout = source.layout if source.layout != "auto" else detect_layout(path)
    if layout == "alembic":
        ini = alembic_ini(path)
        if ini is None:
            raise MigrationsFormatError("no alembic.ini: not an alembic project", path=path)
        return _checked(read_alembic(ini))
    if not path.is_dir():
        raise MigrationsFormatError("not a folder (nor an alembic.ini)", path=path)
    return _checked(read_pairs(path) if layout == "sql" else read_folders(path))


def _checked(migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    """The migrations, once every script is known to run the way its step runs it and
    no ``deploy_before`` names the step itself or an earlier one (a contradiction is refused
    here, naming its file and line, before anything connects)."""
    for index, migration in enumerate(migrations):
        _check_deploy_before(migration, [m.id for m in migrations[: index + 1]])
        if migration.online:
            continue
        for direction, script in (("up", migration.up_sql), ("down", migration.down_sql)):
            try:
                check_script_shape(script, migration.transactional)
            except ScriptShapeError as exc:
                path, line, where = migration.located(
                    direction, script.count("\n", 0, exc.offset) + 1
                )
                raise MigrationsFormatError(
                    f"migration {migration.id} {direction}: {exc.problem}{where}",
                    path=path,
                    line=line,
                ) from None
    return migrations


def _check_deploy_before(migration: Migration, so_far: list[str]) -> None:
    """A later step, or one the series does not hold yet (the contract that comes after an
    expand is often written later)."""
    if migration.deploy_before not in so_far:
        return
    side = migration.side_file
    text = side.read_text(encoding="utf-8") if side else ""
    line = next((n for n, row in enumerate(text.splitlines(), 1)
                 if row.lstrip().startswith("deploy_before")), None)  # fmt: skip
    raise MigrationsFormatError(
        f"deploy_before: {migration.deploy_before!r} is "
        + ("this migration" if migration.deploy_before == migration.id else "an earlier one")
        + ": it must name a later one",
        path=side or migration.path,
        line=line,
    )


def detect_layout(path: Path) -> Layout:
    """alembic (an ``alembic.ini``, or a folder holding one), numbered SQL pairs (a folder of
    ``NNNN_name.up.sql`` files), else vpbench folders."""
    if alembic_ini(path) is not None:
        return "alembic"
    if path.is_dir() and holds_pairs(path):
        return "sql"
    return "vpbench"


def migration_ids(location: MigrationsLocation | None = None) -> tuple[str, ...]:
    return tuple(m.id for m in discover_migrations(location))


def _source(location: MigrationsLocation | None) -> MigrationSource:
    if location is None:
        return MigrationSource(default_migrations_dir(), "vpbench")
    if isinstance(location, ReadSeries):
        return MigrationSource(location.path)
    return location if isinstance(location, MigrationSource) else MigrationSource(location)
