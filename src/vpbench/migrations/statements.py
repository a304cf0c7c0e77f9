"""A migration script's statements: where each begins, and which cannot run inside a
transaction."""

from __future__ import annotations

import re

_STATEMENT_END = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\$(\w*)\$.*?\$\1\$|(;)", re.S
)

BEGIN = re.compile(r"^(BEGIN|START\s+TRANSACTION)(\s+(WORK|TRANSACTION))?$", re.I)
COMMIT = re.compile(r"^(COMMIT|END)(\s+(WORK|TRANSACTION))?$", re.I)
_OUTSIDE_A_TRANSACTION = re.compile(
    r"\b(CONCURRENTLY|VACUUM|ALTER\s+SYSTEM|CREATE\s+DATABASE|DROP\s+DATABASE)\b", re.I
)


def split_statements(script: str) -> list[tuple[str, int]]:
    """Top-level statements of ``script`` with their offsets (semicolons inside literals,
    comments and dollar quotes do not split)."""
    statements: list[tuple[str, int]] = []
    start = 0
    for match in _STATEMENT_END.finditer(script):
        if match.group(2):
            _add_statement(statements, script, start, match.start())
            start = match.end()
    _add_statement(statements, script, start, len(script))
    return statements


def _add_statement(found: list[tuple[str, int]], script: str, start: int, end: int) -> None:
    """Keep a statement (not blank or only comments), with the offset of its first
    character that is neither space nor part of a leading comment line."""
    chunk = script[start:end]
    offset = start
    for line in chunk.splitlines(keepends=True):
        if line.strip() and not line.strip().startswith("--"):
            break
        offset += len(line)
    text = script[offset:end].strip()
    if text:
        found.append((text, offset + len(script[offset:end]) - len(script[offset:end].lstrip())))


def needs_autocommit(script: str) -> bool:
    """``script`` groups its statements itself (``BEGIN; ... COMMIT;``) or holds one that
    PostgreSQL refuses inside a transaction block (``CREATE INDEX CONCURRENTLY``, ``VACUUM``)."""
    return any(
        BEGIN.match(text) or COMMIT.match(text) or _OUTSIDE_A_TRANSACTION.search(text)
        for text, _ in split_statements(script)
    )
