"""Where a series' data came from, said in one line (the console, the report's header)."""

from __future__ import annotations

from typing import Any


def describe_data(data: dict[str, Any]) -> str:
    """Where a series' data came from, for the console and the report's header."""
    if data.get("kind") == "copy":
        return (f"a copy of {data['source']} made {data['copied_at']} by {data['method']} "
                f"({data['why']}) in {data['seconds']:.1f} s")  # fmt: skip
    return f"seeded profile {data.get('profile')} (seed {data.get('seed')})"
