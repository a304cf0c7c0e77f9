"""Faker-built text pools, sampled by index from numpy (Faker per row would be far too slow)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from faker import Faker

StrArray = npt.NDArray[np.object_]


def copy_escape(text: str) -> str:
    """Escape a value for PostgreSQL's COPY text format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _array(values: list[str]) -> StrArray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class TextPools:
    """Realistic strings for every free-text column, already COPY-escaped."""

    first_names: StrArray
    last_names: StrArray
    email_domains: StrArray
    course_titles: StrArray
    course_descriptions: StrArray
    video_titles: StrArray
    quiz_prompts: list[str]
    """raw (not escaped): they are embedded in JSON first"""
    quiz_options: list[str]
    reflections: StrArray
    transcripts: StrArray


def build_text_pools(seed: int, size: int = 2_000) -> TextPools:
    """Draw every pool from one seeded Faker so the same seed gives the same text."""
    fake = Faker("en_US")
    fake.seed_instance(seed)

    def pool(make: Callable[[], str], count: int = size) -> StrArray:
        return _array([copy_escape(make()) for _ in range(count)])

    def raw_pool(make: Callable[[], str], count: int = size) -> list[str]:
        return [make() for _ in range(count)]

    return TextPools(
        first_names=pool(fake.first_name, 500),
        last_names=pool(fake.last_name, 500),
        email_domains=pool(fake.free_email_domain, 20),
        course_titles=pool(lambda: fake.catch_phrase().title(), 400),
        course_descriptions=pool(lambda: fake.paragraph(nb_sentences=4), 400),
        video_titles=pool(lambda: fake.sentence(nb_words=6).rstrip("."), size),
        quiz_prompts=raw_pool(lambda: fake.sentence(nb_words=9).rstrip(".") + "?"),
        quiz_options=raw_pool(lambda: fake.sentence(nb_words=3).rstrip(".")),
        reflections=pool(lambda: fake.paragraph(nb_sentences=3), size),
        transcripts=pool(lambda: fake.paragraph(nb_sentences=2), size),
    )
