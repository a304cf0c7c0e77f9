"""Line numbers of TOML tables and keys, so validation errors can say ``file:line``.

tomllib keeps no positions; this scans the text for table headers and ``key =`` lines
(skipping multi-line strings) and maps each key path to the line it starts on.
"""

from __future__ import annotations

import re
from collections import Counter

KeyPath = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)
_DECODE_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", dotted)
    return tuple(p.strip("\"'") for p in parts)


class TomlLines:
    """Where each table and key of one TOML document starts (1-based lines)."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._value_on_next_line: set[KeyPath] = set()
        arrays: Counter[tuple[str, ...]] = Counter()
        table: KeyPath = ()
        open_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if open_string is not None:
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            header = _HEADER.match(line)
            if header:
                path = _split_key(header.group(2))
                if header.group(1) == "[[":
                    table = (*path, arrays[path])
                    arrays[path] += 1
                else:
                    table = path
                self._lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                key_path = (*table, *_split_key(key.group(1)))
                self._lines.setdefault(key_path, number)
                rest = line[key.end() :]
                if rest.strip() in ('"""', "'''"):  # TOML drops the newline after it
                    self._value_on_next_line.add(key_path)
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        open_string = quote
                        break

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, else of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def value_line(self, path: KeyPath) -> int | None:
        """The line a string value's text starts on (the next one after an opening
        triple quote that ends its line)."""
        line = self._lines.get(path)
        if line is None:
            return self.line_of(path)
        return line + 1 if path in self._value_on_next_line else line


def decode_error_line(message: str) -> int | None:
    """The line number tomllib puts in a TOMLDecodeError message."""
    match = _DECODE_LINE.search(message)
    return int(match.group(1)) if match else None
