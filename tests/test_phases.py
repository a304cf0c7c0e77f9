"""Where a step's time and disk went: the arithmetic of the phase clock and its summary."""

from __future__ import annotations

import pytest

from vpbench.steps.phases import PHASES, PhaseClock, series_time


def test_laps_add_up_per_phase_and_the_disk_high_water_mark_is_kept() -> None:
    free = iter([1000, 900, 600, 950, 1000])  # start, then one reading per lap
    clock = PhaseClock(lambda: next(free))
    for phase in ("settle", "backup", "settle", "copies"):
        assert clock.lap(phase) >= 0
    assert set(clock.seconds) == {"settle", "backup", "copies"}
    assert clock.peak_disk_bytes == 400  # 1000 free at the start, 600 at the least
    assert PhaseClock().peak_disk_bytes is None  # the disk is not visible: unknown


def test_a_part_of_a_lap_counts_as_its_own_phase() -> None:
    """The migration's statements inside the rehearsal and the reversibility check are
    moved out of those phases, never more than the lap itself took."""
    clock = PhaseClock()
    spent = clock.lap("rehearsal", of_which=("up under load", 0.0))
    assert clock.seconds == {"rehearsal": spent, "up under load": 0.0}
    lap = clock.lap("reversibility", of_which=("down", 1e6))
    assert clock.seconds["down"] == lap and clock.seconds["reversibility"] == 0.0


def test_the_series_time_adds_up_to_the_wall_time_with_the_harness_share() -> None:
    steps = [{"up": 10.0, "paired rounds": 20.0, "backup": 5.0}, {"up": 5.0, "settle": 3.0,
              "up under load": 1.0, "down": 1.0}]  # fmt: skip
    spent = series_time(steps, [300, None], 50.0)
    by_phase = {row.phase: row for row in spent.phases}
    assert [row.phase for row in spent.phases] == [*PHASES, "other"]
    assert by_phase["up"].seconds == 15.0 and by_phase["other"].seconds == 5.0
    assert sum(row.seconds for row in spent.phases) == pytest.approx(50.0)
    assert sum(row.share for row in spent.phases) == pytest.approx(1.0)
    assert spent.harness_share == pytest.approx((50.0 - 15.0 - 1.0 - 1.0 - 20.0) / 50.0)
    assert spent.peak_disk_bytes == 300
    assert series_time(steps, [None, None], 50.0).peak_disk_bytes is None  # not visible
