"""The database a series starts from: a profile seeded afresh, or a copy of a team's own
database or dump (which is only read). Either way the disk is checked first, and the
description of where the data came from goes into the series' documents."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from vpbench.dataset.profiles import DirtyRates, Profile
from vpbench.dataset.seed import seed_database
from vpbench.server.databases import (
    database_state,
    drop_database,
    refuse_unless_owned,
    user_table_count,
)
from vpbench.server.source_copy import (
    SourceCopy,
    StartFrom,
    copy_from_database,
    copy_from_dump,
    inspect_dump,
    inspect_source,
)
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.copies import check_disk, seeded_bytes

Say = Callable[[str], None]


def start_database(
    target: ServerTarget,
    dbname: str,
    *,
    profile: Profile,
    seed: int,
    start_from: StartFrom | None = None,
    dirty: DirtyRates | None = None,
    force: bool = False,
    say: Say = lambda message: None,
    run: str = "steps",
) -> dict[str, Any]:
    """``dbname`` seeded with ``profile``, or copied from ``start_from`` (replacing a
    database of that name, which must be vpbench's unless ``force``); where its data came
    from, as the summary documents record it. ``run`` names the command in a refusal."""
    if start_from is None:
        with connect(target, autocommit=True) as conn:
            need = check_disk(
                conn, seeded_bytes(profile), dbname, f"{run} --profile {profile.name}"
            )
            say(f"disk: {need.describe()}")
        say(f"seeding {dbname} with profile {profile.name} (seed {seed})")
        seed_database(target, dbname, profile, seed=seed, dirty=dirty, force=force)
        return {"kind": "profile", "profile": profile.name, "seed": seed}
    copied = _copy_source(target, dbname, start_from, say, run, force)
    return {"kind": "copy", **copied.to_dict()}


def _copy_source(
    target: ServerTarget, dbname: str, start_from: StartFrom, say: Say, run: str, force: bool
) -> SourceCopy:
    """The working database ``dbname``, copied from the team's database or dump after the
    disk check (it replaces a working database of that name)."""
    if start_from.dump is not None:
        size, copy = inspect_dump(start_from.dump), partial(copy_from_dump, dump=start_from.dump)
    else:
        source = inspect_source(target, start_from.database or "")
        size, copy = source.bytes, partial(copy_from_database, source=source)
    with connect(target, autocommit=True) as conn:
        need = check_disk(conn, size, dbname, f"{run} {start_from.describe()}")
        say(f"disk: {need.describe()}")
    existing = database_state(target, dbname)
    if existing.exists and not existing.marked:
        with connect(target, dbname) as conn:
            tables = user_table_count(conn)
        refuse_unless_owned(existing, operation="replace", tables=tables, force=force)
    drop_database(target, dbname, force=True)
    copied = copy(target, working=dbname)
    say(f"working database {dbname}: {copied.describe()}")
    return copied
