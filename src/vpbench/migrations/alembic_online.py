"""An alembic revision whose code reads the database as it runs (``op.get_bind()``), which
alembic cannot render as SQL offline: its ``upgrade()`` or ``downgrade()`` runs through
alembic's operations on vpbench's own connection, so the live traffic's lock sampler
attributes the waits it causes to the step, in one transaction with ``alembic_version`` and
vpbench's ledger, under the step's ``lock_timeout``. Its statements are not observed one by
one (the report says so); its duration, the stalls it causes under traffic, the audit, the
paired before/after and its reversibility are measured as for any step.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from vpbench.migrations.alembic_project import DROP_VERSION_TABLE, project_config
from vpbench.migrations.folder import Migration
from vpbench.migrations.ledger import record_step


def run_online(
    conn: psycopg.Connection[Any], migration: Migration, direction: str, lock_timeout_ms: int
) -> None:
    """``direction`` of the revision ``migration`` on ``conn`` (in autocommit mode, and so
    again afterwards), committed with ``alembic_version`` and the ledger row, or not at all;
    a server error is raised as psycopg raised it."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, exc
    from sqlalchemy.pool import StaticPool

    assert migration.project is not None
    script = ScriptDirectory.from_config(project_config(migration.project))
    revision = script.get_revision(migration.id)
    assert revision is not None
    before = revision.down_revision
    assert before is None or isinstance(before, str)
    # The engine hands out this very connection; it is never disposed (that would close it).
    engine = create_engine("postgresql+psycopg://", creator=lambda: conn, poolclass=StaticPool)
    began = time.perf_counter()
    conn.autocommit = False
    try:
        with engine.connect() as bound, bound.begin():
            conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            context = MigrationContext.configure(bound)
            with Operations.context(context):
                if direction == "up":
                    revision.module.upgrade()
                    context.stamp(script, revision.revision)
                else:
                    revision.module.downgrade()
                    context.stamp(script, before or "base")
                    if before is None:  # as the rendered first revision does
                        conn.execute(DROP_VERSION_TABLE)
            record_step(conn, migration, direction, time.perf_counter() - began)
    except exc.DBAPIError as error:
        if isinstance(error.orig, psycopg.Error):
            raise error.orig from None
        raise
    finally:
        if not conn.closed:
            conn.rollback()
            conn.autocommit = True
