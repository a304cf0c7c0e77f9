"""The tables a step touched: those it took a lock on or added an index to, whose size its
cost grows with."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping


def lock_relation(lock: str) -> str:
    """The relation of a held lock as the step records it (``AccessExclusiveLock on t``,
    the relation as ``regclass`` prints it)."""
    return lock.partition(" on ")[2]


LOCK_STRENGTH = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
"""PostgreSQL's table lock modes, weakest first: each conflicts with more than the last"""


def blocks_the_app(lock: str) -> bool:
    """The app's writes (ROW EXCLUSIVE) wait for it: SHARE and stronger (its reads only for
    ACCESS EXCLUSIVE)."""
    return LOCK_STRENGTH.index(lock.partition(" on ")[0]) >= LOCK_STRENGTH.index("ShareLock")


def lock_mode(lock: str) -> str:
    """``ACCESS EXCLUSIVE`` for ``AccessExclusiveLock on t``."""
    mode = lock.partition(" on ")[0].removesuffix("Lock")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", mode).upper()


def touched_tables(
    locks: Iterable[str], rows: Mapping[str, int], added_to: Iterable[str] = ()
) -> dict[str, int]:
    """Of the tables in ``rows`` (named as ``regclass`` prints them: qualified outside the
    search path), those a lock in ``locks`` was taken on, or that a relation the step added
    belongs to (``added_to``, qualified: ``public.t``; a concurrent index build holds no
    lock once it is done), with their rows."""
    named = {lock_relation(lock) for lock in locks}
    named |= {table.removeprefix("public.") for table in added_to}
    return {table: count for table, count in sorted(rows.items()) if table in named}
