"""What a change to a migration series does to the databases that already ran its base:
the migrations it adds, those it edits after they were applied, those it removes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vpbench.migrations.folder import Migration


@dataclass(frozen=True)
class Edited:
    """A migration the base already had, changed by the head: a database that ran the base
    keeps what the base's version did, and never runs the head's."""

    base: Migration
    head: Migration

    def describe(self) -> str:
        return (
            f"{self.head.id} was edited after the base had it (checksum "
            f"{self.base.checksum[:12]} in the base, {self.head.checksum[:12]} in the head)"
        )


@dataclass(frozen=True)
class SeriesChanges:
    base: tuple[Migration, ...]
    """the base's series, as a database that ran it has it"""
    new: tuple[Migration, ...]
    """in the head and not in the base, in the head's order"""
    edited: tuple[Edited, ...]
    removed: tuple[Migration, ...]
    """in the base and not in the head"""
    out_of_order: tuple[Migration, ...]
    """new migrations placed before one the base already had: a database that ran the base
    applied the later one first"""
    series: tuple[Migration, ...]
    """what a database that ran the base has and gets: the base's migrations as it ran
    them (edited or removed by the head or not), then the new ones"""


def series_changes(base: Sequence[Migration], head: Sequence[Migration]) -> SeriesChanges:
    """How ``head`` changes the series ``base``."""
    in_base = {m.id: m for m in base}
    in_head = {m.id for m in head}
    new = tuple(m for m in head if m.id not in in_base)
    edited = tuple(
        Edited(in_base[m.id], m)
        for m in head
        if m.id in in_base and in_base[m.id].checksum != m.checksum
    )
    last_kept = max((i for i, m in enumerate(head) if m.id in in_base), default=-1)
    return SeriesChanges(
        base=tuple(base),
        new=new,
        edited=edited,
        removed=tuple(m for m in base if m.id not in in_head),
        out_of_order=tuple(m for m in head[: last_kept + 1] if m.id not in in_base),
        series=(*base, *new),
    )
