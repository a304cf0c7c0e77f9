"""Numbered SQL pairs, the golang-migrate and dbmate convention: one step per
``NNNN_name.up.sql`` with its ``NNNN_name.down.sql``, in number order, and an optional side
file ``NNNN_name.toml`` with vpbench's fields (title, why, max_stall, ...).

A pair runs as one transaction unless its SQL groups statements itself (``BEGIN; ...
COMMIT;``) or holds a statement that cannot run inside one (``CONCURRENTLY``, ``VACUUM``);
``transactional`` in the side file decides where it is given.
"""

from __future__ import annotations

import re
from pathlib import Path

from vpbench.errors import MigrationsFormatError
from vpbench.migrations.folder import Migration, side_fields
from vpbench.migrations.statements import needs_autocommit, read_sql_file, split_statements

PAIR = re.compile(r"^(?P<id>(?P<number>\d+)_(?P<name>[A-Za-z0-9_]+))\.(?P<direction>up|down)\.sql$")


def holds_pairs(folder: Path) -> bool:
    """``folder`` holds at least one numbered ``.up.sql`` or ``.down.sql`` file."""
    return any(PAIR.match(p.name) for p in folder.iterdir() if p.is_file())


def read_pairs(folder: Path) -> tuple[Migration, ...]:
    """Every pair in ``folder``, in number order."""
    files: dict[str, dict[str, Path]] = {}
    numbers: dict[str, int] = {}
    for path in folder.iterdir():
        match = PAIR.match(path.name)
        if match is None or not path.is_file():
            continue
        files.setdefault(match["id"], {})[match["direction"]] = path
        numbers[match["id"]] = int(match["number"])
    seen: dict[int, str] = {}
    for step_id, number in sorted(numbers.items()):
        if number in seen:
            raise MigrationsFormatError(
                f"steps {seen[number]} and {step_id} have the same number", path=folder / step_id
            )
        seen[number] = step_id
    found = []
    for step_id in sorted(files, key=lambda i: (numbers[i], i)):
        pair = files[step_id]
        for direction, other in (("up", "down"), ("down", "up")):
            if direction not in pair:
                raise MigrationsFormatError(
                    f"{pair[other].name} has no {step_id}.{direction}.sql beside it",
                    path=pair[other],
                )
        up_sql, down_sql = read_sql_file(pair["up"]), read_sql_file(pair["down"])
        if not split_statements(up_sql):
            raise MigrationsFormatError(f"{pair['up'].name} has no statement", path=pair["up"])
        found.append(
            Migration(
                id=step_id,
                path=folder,
                up_sql=up_sql,
                down_sql=down_sql,
                layout="numbered SQL pair",
                files=(pair["up"], pair["down"]),
                **side_fields(
                    folder / f"{step_id}.toml",
                    default_title=step_id.split("_", 1)[1].replace("_", " "),
                    transactional=not (needs_autocommit(up_sql) or needs_autocommit(down_sql)),
                ),
            )
        )
    return tuple(found)
