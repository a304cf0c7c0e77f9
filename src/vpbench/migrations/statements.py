"""A migration script's statements: where each begins, and which cannot run inside a
transaction."""

from __future__ import annotations

from pathlib import Path

from vpbench.errors import MigrationsFormatError, read_text_file


def first_line(statement: str) -> str:
    """How a statement is named in reports: its first line, at most 80 characters (empty
    for a blank one)."""
    lines = statement.strip().splitlines()
    return lines[0][:80] if lines else ""


def keywords(statement: str) -> list[str]:
    """The SQL keywords of ``statement`` in order, as PostgreSQL's scanner reads them
    (``BEGIN``, ``CONCURRENTLY``): never a word inside a comment, a string or a quoted
    name, whatever the spacing and case. Empty when the scanner cannot read it."""
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(statement)
    except ParseError:
        return []
    return [t.name.removesuffix("_P") for t in tokens if t.kind != "NO_KEYWORD"]


def is_begin(statement: str) -> bool:
    """``BEGIN`` or ``START TRANSACTION``, with any of their options."""
    words = keywords(statement)
    return words[:1] == ["BEGIN"] or words[:2] == ["START", "TRANSACTION"]


def is_commit(statement: str) -> bool:
    return keywords(statement)[:1] in (["COMMIT"], ["END"])


def runs_outside_a_transaction(statement: str) -> bool:
    """A statement PostgreSQL refuses inside a transaction block: ``CREATE/DROP INDEX
    CONCURRENTLY``, ``REINDEX ... CONCURRENTLY``, ``VACUUM``, ``ALTER SYSTEM``,
    ``CREATE/DROP DATABASE`` (``REFRESH MATERIALIZED VIEW CONCURRENTLY`` may run in one)."""
    words = keywords(statement)
    return (
        ("CONCURRENTLY" in words and words[:1] != ["REFRESH"])
        or words[:1] == ["VACUUM"]
        or words[:2] in (["ALTER", "SYSTEM"], ["CREATE", "DATABASE"], ["DROP", "DATABASE"])
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


def read_sql_file(path: Path) -> str:
    """The text of a migration's SQL file, refused (with its line) when it is not UTF-8
    text or PostgreSQL's scanner cannot read it (an unterminated literal or comment)."""
    from pglast import split
    from pglast.parser import ParseError

    script = read_text_file(path, "migration file", "SQL")
    try:
        list(split(script, with_parser=False, only_slices=True))
    except ParseError as exc:
        message, offset = (*exc.args, None)[:2]
        line = script.count("\n", 0, offset) + 1 if isinstance(offset, int) else None
        text = " ".join(str(message).split())  # the scanner quotes the rest of the script
        raise MigrationsFormatError(text[:200], path=path, line=line) from None
    return script


class ScriptShapeError(Exception):
    """A script whose statements contradict how its step runs them, at ``offset``."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.offset, self.problem = offset, problem


def group_transactions(script: str) -> list[list[tuple[str, int]]]:
    """The statements of a non-transactional script, grouped into what runs as one
    transaction: a lone statement, or the statements of a ``BEGIN; ... COMMIT;`` block;
    ``ScriptShapeError`` when its BEGIN and COMMIT do not pair up."""
    units: list[list[tuple[str, int]]] = []
    block: list[tuple[str, int]] | None = None
    began_at = 0
    for statement, offset in split_statements(script):
        if is_begin(statement):
            if block is not None:
                raise ScriptShapeError(offset, "BEGIN inside a BEGIN block")
            block, began_at = [], offset
        elif is_commit(statement):
            if block is None:
                raise ScriptShapeError(offset, "COMMIT without BEGIN")
            if block:
                units.append(block)
            block = None
        elif block is not None:
            block.append((statement, offset))
        else:
            units.append([(statement, offset)])
    if block is not None:
        raise ScriptShapeError(began_at, "BEGIN without COMMIT")
    return units


def check_script_shape(script: str, transactional: bool) -> None:
    """Refuse (``ScriptShapeError``) a script that contradicts how its step runs: a
    transactional step's script holding BEGIN/COMMIT or a statement PostgreSQL refuses
    inside a transaction, a non-transactional one whose BEGIN and COMMIT do not pair up."""
    if not transactional:
        group_transactions(script)
        return
    for text, offset in split_statements(script):
        if is_begin(text) or is_commit(text) or runs_outside_a_transaction(text):
            first = " ".join(text.split()[:4])
            raise ScriptShapeError(
                offset,
                f"`{first}` cannot run inside the step's one transaction: "
                "declare transactional = false",
            )


def needs_autocommit(script: str) -> bool:
    """``script`` groups its statements itself (``BEGIN; ... COMMIT;``) or holds one that
    PostgreSQL refuses inside a transaction block (``CREATE INDEX CONCURRENTLY``, ``VACUUM``)."""
    return any(
        is_begin(text) or is_commit(text) or runs_outside_a_transaction(text)
        for text, _ in split_statements(script)
    )
