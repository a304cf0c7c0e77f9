"""The video page's queries and whole-page scenario, with pytest-benchmark:

pytest bench/ --benchmark-only [--vpbench-profile small] [--vpbench-migrate-to none]
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

ENTRIES = [
    "video_header",
    "quiz_attempts_for_video",
    "reflections_for_video",
    "course_progress",
    "recent_voice_memos",
    "video_page",
]


@pytest.mark.parametrize("name", ENTRIES)
def test_video_page(vpbench_query: Callable[[str], None], name: str) -> None:
    vpbench_query(name)
