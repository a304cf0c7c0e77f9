"""An alembic project as a series of steps: each revision one step, in revision order, its
``upgrade`` and ``downgrade`` rendered as SQL by alembic's offline (``--sql``) mode and run by
vpbench's own apply, so that locks, timeouts, retries and rewrites are observed the same way
as for any other step.

The rendered SQL keeps alembic's bookkeeping (``alembic_version`` is created by the first
revision and updated by every other), so afterwards ``alembic current`` agrees with what
vpbench applied. Two adjustments keep a step reversible: the first revision's rendered
``downgrade`` also drops the ``alembic_version`` table its ``upgrade`` created, and a revision
rendered as one ``BEGIN; ... COMMIT;`` block runs as a transactional step (one with an
``autocommit_block()`` runs block by block, as psql would run the file). An optional side
file beside the revision (``versions/<revision file>.toml``) gives vpbench's fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from vpbench.errors import MigrationsFormatError
from vpbench.migrations.folder import Migration, side_fields
from vpbench.migrations.ledger import ledger, record_step
from vpbench.migrations.statements import is_begin, is_commit, split_statements

ALEMBIC_INI = "alembic.ini"
VERSION_TABLE = "alembic_version"
_REVISION_ID = re.compile(r"^[A-Za-z0-9_]+$")
_HEADER_LINES = ("Revision ID:", "Revises:", "Create Date:")
DROP_VERSION_TABLE = f"DROP TABLE {VERSION_TABLE};\n"


def alembic_ini(path: Path) -> Path | None:
    """The ``alembic.ini`` that ``path`` names: the file itself, or one inside the folder."""
    if path.is_file() and path.suffix == ".ini":
        return path
    inside = path / ALEMBIC_INI
    return inside if path.is_dir() and inside.is_file() else None


def read_alembic(ini: Path) -> tuple[Migration, ...]:
    """Every revision of the project configured by ``ini``, oldest first."""
    from alembic.script import ScriptDirectory

    ini = ini.resolve()  # rendering runs from the project's folder
    try:
        script = ScriptDirectory.from_config(project_config(ini))
        heads = script.get_heads()
        revisions = list(reversed(list(script.walk_revisions())))
    except SyntaxError as exc:
        raise MigrationsFormatError(
            f"Python syntax error: {exc.msg}", path=exc.filename or ini, line=exc.lineno
        ) from None
    except Exception as exc:  # the team's env.py and revisions: any failure is theirs
        raise MigrationsFormatError(f"alembic cannot read the project: {exc}", path=ini) from None
    if len(heads) > 1:
        raise MigrationsFormatError(
            f"the project has {len(heads)} heads ({', '.join(heads)}); vpbench runs one "
            "linear history", path=ini, hint="merge them (alembic merge heads)",
        )  # fmt: skip
    return tuple(_step(ini, revision) for revision in revisions)


def _step(ini: Path, revision: Any) -> Migration:
    module = Path(revision.path)
    if not _REVISION_ID.match(revision.revision):
        raise MigrationsFormatError(
            f"revision id {revision.revision!r} is not letters, digits and _", path=module
        )
    for function in ("upgrade", "downgrade"):
        if not callable(getattr(revision.module, function, None)):
            raise MigrationsFormatError(f"revision {revision.revision} has no {function}()",
                                        path=module)  # fmt: skip
    before = revision.down_revision
    if isinstance(before, tuple):
        raise MigrationsFormatError(
            f"revision {revision.revision} merges {', '.join(before)}; vpbench runs one "
            "linear history", path=module,
        )  # fmt: skip
    lines = [line.strip() for line in (revision.longdoc or "").splitlines()[1:]]
    why = "\n".join(line for line in lines if line and not line.startswith(_HEADER_LINES))
    fields = {"id": revision.revision, "path": module, "layout": "alembic revision",
              "files": (module, module)}  # fmt: skip
    title = revision.doc or revision.revision
    try:
        up = _render(ini, "upgrade", f"{before}:{revision.revision}" if before
                     else revision.revision)  # fmt: skip
        down = _render(ini, "downgrade", f"{revision.revision}:{before or 'base'}")
    except _OfflineRenderError as exc:
        source = hashlib.sha256(module.read_bytes()).hexdigest()
        return Migration(
            up_sql=f"-- alembic upgrade {before or 'base'}:{revision.revision}, online; "
            f"revision file sha256 {source}\n",
            down_sql=f"-- alembic downgrade {revision.revision}:{before or 'base'}, online\n",
            online=f"its code cannot be rendered as SQL offline ({exc})",
            project=ini,
            **fields,
            **side_fields(module.with_suffix(".toml"), default_title=title, default_why=why),
        )
    (up_body, up_whole), (down_body, down_whole) = _unwrap(up), _unwrap(down)
    whole = up_whole and down_whole  # else it runs block by block, as rendered
    up_sql, down_sql = (up_body, down_body) if whole else (up, down)
    if before is None:  # its upgrade created alembic_version: its downgrade drops it
        down_sql += DROP_VERSION_TABLE
    return Migration(
        up_sql=up_sql,
        down_sql=down_sql,
        rendered=True,
        **fields,
        **side_fields(
            module.with_suffix(".toml"), default_title=title, default_why=why, transactional=whole
        ),
    )


def project_config(ini: Path, buffer: io.StringIO | None = None) -> Any:
    """alembic's Config of the project at ``ini`` (offline output into ``buffer``)."""
    from alembic.config import Config

    return Config(str(ini), output_buffer=buffer)


class _OfflineRenderError(Exception):
    """A revision's code failed in offline mode: it reads the database as it runs."""


def _render(ini: Path, direction: str, span: str) -> str:
    """The SQL alembic's offline mode writes for ``span`` (run from the project's folder, as
    the alembic command would be)."""
    from alembic import command

    buffer = io.StringIO()
    run = command.upgrade if direction == "upgrade" else command.downgrade
    try:
        with contextlib.chdir(ini.parent):
            run(project_config(ini, buffer), span, sql=True)
    except Exception as exc:  # the team's revision code: any failure is theirs
        raise _OfflineRenderError(f"{direction}(): {exc}") from None
    return buffer.getvalue()


def _unwrap(script: str) -> tuple[str, bool]:
    """A script that is one ``BEGIN; ... COMMIT;`` block without it, and True; any other
    script as it is, and False."""
    statements = split_statements(script)
    marks = [i for i, (text, _) in enumerate(statements) if is_begin(text) or is_commit(text)]
    if marks != [0, len(statements) - 1] or not is_begin(statements[0][0]):
        return script, False
    begin_at, end_at = statements[0][1], statements[-1][1]
    after_begin = script.index(";", begin_at) + 1
    return script[:begin_at] + script[after_begin:end_at].rstrip() + "\n", True


def alembic_current(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """The revisions ``alembic_version`` holds (empty where there is no such table)."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [VERSION_TABLE]).fetchone()
    if not found or not found[0]:
        return ()
    rows = conn.execute(sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(VERSION_TABLE)))
    return tuple(str(r[0]) for r in rows.fetchall())


def applied_by_alembic(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration]
) -> tuple[Migration, ...]:
    """The revisions a database already has by alembic's own record (``alembic_version``),
    oldest first: the steps up to and including its current revision."""
    current = alembic_current(conn)
    ids = [m.id for m in migrations]
    if len(current) != 1 or current[0] not in ids:
        return ()
    return tuple(migrations[: ids.index(current[0]) + 1])


def describe_adopted(adopted: Sequence[str]) -> str:
    """What ``adopt_alembic_history`` recorded, in one line."""
    return (f"alembic_version says {adopted[-1]} is applied: {len(adopted)} revision(s) "
            "recorded as applied")  # fmt: skip


def adopt_alembic_history(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration]
) -> tuple[str, ...]:
    """Record in vpbench's ledger, without running them, the revisions a database has by
    alembic's own record when the ledger knows none of the series (a team's database,
    migrated by alembic until now); the ids recorded."""
    known = ledger(conn)
    if any(m.id in known for m in migrations):
        return ()
    adopted = applied_by_alembic(conn, migrations)
    with conn.transaction():
        for migration in adopted:
            record_step(conn, migration, "up", 0.0)
    return tuple(m.id for m in adopted)
