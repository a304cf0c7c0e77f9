"""A migration script's statements: where each begins, and which cannot run inside a
transaction."""

from __future__ import annotations

import re

BEGIN = re.compile(r"^(BEGIN|START\s+TRANSACTION)(\s+(WORK|TRANSACTION))?$", re.I)
COMMIT = re.compile(r"^(COMMIT|END)(\s+(WORK|TRANSACTION))?$", re.I)
_OUTSIDE_A_TRANSACTION = re.compile(
    r"\b(CONCURRENTLY|VACUUM|ALTER\s+SYSTEM|CREATE\s+DATABASE|DROP\s+DATABASE)\b", re.I
)


def split_statements(script: str) -> list[tuple[str, int]]:
    """Top-level statements of ``script`` with their offsets, split by PostgreSQL's own
    scanner (pglast): semicolons inside literals (``E'a\\';b'``), quoted identifiers,
    nested comments and dollar quotes do not split. A script the scanner cannot read (an
    unterminated literal) is one statement, so that the server names the error."""
    from pglast import split
    from pglast.parser import ParseError

    statements: list[tuple[str, int]] = []
    try:
        pieces = list(split(script, with_parser=False, only_slices=True))
    except ParseError:
        pieces = [slice(0, len(script))]
    for piece in pieces:
        _add_statement(statements, script, piece.start, piece.stop)
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
