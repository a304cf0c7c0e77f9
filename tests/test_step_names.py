"""Names vpbench derives from a step id (backups and copies, a report's columns) are unique
for any id: 6-digit versions, alembic revisions, Flyway versions, ids that begin alike,
and databases whose own names leave little room."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from test_steps import QUICK, TINY, databases
from vpbench.migrations.folder import short_ids
from vpbench.server.backup import backup_name
from vpbench.server.databases import MAX_NAME_LENGTH
from vpbench.server.target import ServerTarget
from vpbench.steps.pipeline import run_steps

IDS = {
    "golang-migrate versions": ["000055_add_x", "000056_upgrade_channels_v6.0", "000057_y"],
    "alembic revisions": ["787b1a2c3d4e", "787b9f00aa11", "787c00000000"],
    "flyway versions": ["1", "1.1", "1.10", "1.1.1", "2024.01.05", "2024.01.06"],
    "ids that begin one another": ["0001_a", "0001_ab", "0001_abc"],
}
SOURCES = ["vpbench", "team_db", "x" * 50, "y" * MAX_NAME_LENGTH]
LABELS = ("before", "load", "after")


@pytest.mark.parametrize("ids", IDS.values(), ids=IDS.keys())
def test_every_name_derived_from_a_step_id_is_unique(ids: list[str]) -> None:
    for source in SOURCES:
        names = [backup_name(source, f"{label}_{i}") for i in ids for label in LABELS]
        assert len(set(names)) == len(names), source
        assert all(len(name.encode()) <= MAX_NAME_LENGTH for name in names)
        # one "__" at most, between the source and the label (a long source leaves none)
        assert all(name.count("__") <= 1 for name in names)
        labels = {name.split("__")[1][:4] for name in names if "__" in name}
        assert labels <= {"befo", "load", "afte"} and (labels or len(source) > 40)
    short = short_ids(["legacy", *ids])
    assert len(set(short.values())) == len(ids) + 1
    assert all(whole.startswith(label) for whole, label in short.items())


def test_the_rules_they_replace_collide_on_the_same_ids() -> None:
    """The twin: the first four characters of an id gave every 6-digit step one backup
    and every revision one column, and a name cut at 63 bytes one to every step of a
    database with a long name."""
    for ids in IDS.values():
        assert len({i[:4] for i in ids}) < len(ids)
    long_source = SOURCES[-1]
    cut = {f"{long_source}__before_{i}"[:MAX_NAME_LENGTH] for i in IDS["alembic revisions"]}
    assert len(cut) == 1


@pytest.mark.slow
def test_keep_backups_keeps_one_backup_per_six_digit_step(
    target: ServerTarget, session_prefix: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "pairs"
    migrations.mkdir()
    ids = ["000001_add_note", "000002_add_mood", "000003_add_seen"]
    for number, column in zip(ids, ("note", "mood", "seen"), strict=True):
        (migrations / f"{number}.up.sql").write_text(
            f"ALTER TABLE videos ADD COLUMN {column} text;"
        )
        (migrations / f"{number}.down.sql").write_text(f"ALTER TABLE videos DROP COLUMN {column};")
    name = f"{session_prefix}_names"
    result = run_steps(
        target, name, profile=TINY, seed=4, workload_paths=[], migrations_dir=migrations,
        out_dir=tmp_path / "out", options=replace(QUICK, traffic=None, keep_backups=True),
    )  # fmt: skip
    assert [s.migration.id for s in result.steps] == ids
    assert databases(target, f"{name}__before_%") == [f"{name}__before_{i}" for i in ids]
    for step in result.steps:
        assert len({copy.name for copy in step.copies}) == len(step.copies)
