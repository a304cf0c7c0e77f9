"""Voice-memo queries (target 20 ms each), with pytest-benchmark."""

from __future__ import annotations

from collections.abc import Callable

import pytest

ENTRIES = [
    "memos_for_video",
    "memos_for_course",
    "recorded_time_per_course",
    "long_memos_in_course",
    "latest_memo_per_video",
]


@pytest.mark.parametrize("name", ENTRIES)
def test_voice_memos(vpbench_query: Callable[[str], None], name: str) -> None:
    vpbench_query(name)
