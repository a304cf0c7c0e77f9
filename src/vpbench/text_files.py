"""Reading the text files a user gives (workloads, checks, migrations' SQL and TOML)."""

from __future__ import annotations

from pathlib import Path

from vpbench.errors import UnreadableTextError


def read_text_file(path: Path, what: str, language: str) -> str:
    """The UTF-8 text of ``path``, ``what`` (e.g. "workload file") written in ``language``
    (e.g. "TOML"); a binary file is refused naming the line of its first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableTextError(f"cannot read {what}: {exc.strerror}", path=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableTextError(
            f"not a UTF-8 text file (byte 0x{data[exc.start]:02x}): a {what} is {language}",
            path=path,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
