"""A database in the final state of a migration series: seeded afresh (or copied from a
database seeded so), every migration applied, settled (VACUUM (ANALYZE) until autovacuum has
nothing left to change)."""

from __future__ import annotations

from vpbench.dataset.profiles import Profile
from vpbench.migrations.alembic_project import adopt_alembic_history
from vpbench.migrations.apply import apply_step, migration_states, plan_up
from vpbench.migrations.locking import LockPolicy
from vpbench.migrations.sources import MigrationsLocation, discover_migrations
from vpbench.server.maintenance import flush_statistics, settle
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.start import start_database


def prepare_final_state(
    target: ServerTarget,
    name: str,
    migrations_dir: MigrationsLocation | None,
    profile: Profile,
    seed: int,
    start_from: StartFrom | None = None,
) -> tuple[str, ...]:
    """Seed ``name`` (or copy ``start_from`` into it), apply every migration of
    ``migrations_dir`` (default: the reference series) and settle; the ids applied."""
    start_database(target, name, profile=profile, seed=seed, start_from=start_from,
                   run="ci nightly")  # fmt: skip
    return apply_series(target, name, migrations_dir)


def apply_series(
    target: ServerTarget, name: str, migrations_dir: MigrationsLocation | None
) -> tuple[str, ...]:
    """Apply every pending migration of ``migrations_dir`` to ``name`` and settle it; the
    ids applied."""
    migrations = discover_migrations(migrations_dir)
    with connect(target, name, autocommit=True) as conn:
        adopt_alembic_history(conn, migrations)
        pending = plan_up(migration_states(conn, migrations), None)
        for migration in pending:
            apply_step(conn, migration, "up", LockPolicy())
        flush_statistics(conn)
        settle(conn)
    return tuple(m.id for m in pending)
