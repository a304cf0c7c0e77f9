"""The tables a step touched: those it took a lock on, whose size its cost grows with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def lock_relation(lock: str) -> str:
    """The relation of a held lock as the step records it (``AccessExclusiveLock on t``)."""
    return lock.partition(" on ")[2]


def touched_tables(locks: Iterable[str], rows: Mapping[str, int]) -> dict[str, int]:
    """Of the tables in ``rows`` (named as ``regclass`` prints them, qualified outside the
    search path), those a lock in ``locks`` was taken on, with their rows."""
    locked = {lock_relation(lock) for lock in locks}
    return {
        table: count
        for table, count in sorted(rows.items())
        if table.rpartition(".")[2].strip('"') in locked
    }
