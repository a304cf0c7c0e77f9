"""Scale profiles and dirty-data knobs for seeding the legacy database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

from vpbench.errors import UsageError

VOICE_MEMO_SHARE = 0.2
"""About one reflection in five is a voice memo."""


@dataclass(frozen=True)
class Profile:
    """Row volumes of one scale profile (approximate: dirty rows are drawn at random)."""

    name: str
    users: int
    courses: int
    videos_per_course: int
    quiz_attempts: int
    reflections: int
    purpose: str

    @property
    def videos(self) -> int:
        return self.courses * self.videos_per_course

    @property
    def deleted_videos(self) -> int:
        """Videos that existed once; orphaned and dangling rows still point at them."""
        return max(2, self.videos // 10)

    @property
    def total_rows(self) -> int:
        return self.users + self.courses + self.videos + self.quiz_attempts + self.reflections


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("tiny", 300, 6, 8, 3_000, 1_200, "tests, a few seconds"),
        Profile("small", 5_000, 40, 25, 100_000, 40_000, "demo, ~100k quiz attempts"),
        Profile("medium", 50_000, 150, 30, 1_000_000, 400_000, "~1M quiz attempts"),
        Profile("large", 400_000, 500, 40, 10_000_000, 4_000_000, "~10M quiz attempts"),
    )
}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; an unknown name lists the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(PROFILES)
        raise UsageError(f"unknown profile {name!r}; valid profiles: {valid}") from None


MAX_DIRTY_RATE = 0.5


@dataclass(frozen=True)
class DirtyRates:
    """Share of rows seeded with each kind of legacy damage (0 disables it)."""

    orphaned_quiz_attempts: float = 0.02
    """quiz attempts whose video was deleted"""
    stale_scores: float = 0.03
    """quiz attempts whose stored score/percentage disagree with the answers"""
    null_reflection_course: float = 0.04
    """reflections with a NULL course_id (derivable from the video)"""
    null_reflection_video: float = 0.02
    """reflections with a NULL video_id (not derivable)"""
    dangling_reflection_links: float = 0.01
    """reflections pointing at a deleted video"""
    malformed_voice_metadata: float = 0.01
    """voice memos whose metadata header cannot be parsed"""

    def __post_init__(self) -> None:
        for knob in fields(self):
            value = getattr(self, knob.name)
            if not 0.0 <= value <= MAX_DIRTY_RATE:
                raise UsageError(
                    f"dirty rate {knob.name}={value}: must be between 0 and {MAX_DIRTY_RATE}"
                )
        link_total = (
            self.null_reflection_course
            + self.null_reflection_video
            + self.dangling_reflection_links
        )
        if link_total > MAX_DIRTY_RATE:
            raise UsageError(
                f"reflection link dirty rates add up to {link_total:g}; "
                f"their sum must not exceed {MAX_DIRTY_RATE}"
            )

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def clean(cls) -> DirtyRates:
        """No damage at all: every audit check of the data finds nothing."""
        return cls(**dict.fromkeys(cls.knobs(), 0.0))

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.knobs()}

    def with_overrides(self, overrides: Mapping[str, float]) -> DirtyRates:
        return replace(self, **overrides)


def parse_dirty_rates(specs: Iterable[str], base: DirtyRates | None = None) -> DirtyRates:
    """Apply ``KNOB=VALUE`` overrides (``all=0`` sets every knob) to the default rates."""
    overrides: dict[str, float] = {}
    knobs = DirtyRates.knobs()
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep:
            raise UsageError(f"--dirty-rate {spec!r}: expected KNOB=VALUE, e.g. stale_scores=0.05")
        if name != "all" and name not in knobs:
            raise UsageError(
                f"--dirty-rate {spec!r}: unknown knob {name!r}; "
                f"valid knobs: all, {', '.join(knobs)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(
                f"--dirty-rate {spec!r}: {raw!r} is not a number; "
                f"use a fraction between 0 and {MAX_DIRTY_RATE}"
            ) from None
        if not 0.0 <= value <= MAX_DIRTY_RATE:
            raise UsageError(
                f"--dirty-rate {spec!r}: {name} must be a fraction between 0 and {MAX_DIRTY_RATE}"
            )
        if name == "all":
            overrides.update(dict.fromkeys(knobs, value))
        else:
            overrides[name] = value
    return (base or DirtyRates()).with_overrides(overrides)
