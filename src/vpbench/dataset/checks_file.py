"""A team's own integrity checks, in a TOML checks file::

    [checks.orphan_orders]
    description = "orders of no customer"
    sql = '''SELECT count(*) FROM orders o
             WHERE NOT EXISTS (SELECT FROM customers c WHERE c.id = o.customer_id)'''
    examples = '''SELECT o.id FROM orders o
                  WHERE NOT EXISTS (SELECT FROM customers c WHERE c.id = o.customer_id)
                  ORDER BY 1'''

``sql`` returns one row with one count: the violations. ``examples`` (optional) returns the
offending rows' ids, first column; vpbench keeps the first few. Both are read-only queries,
checked with PostgreSQL's own parser when the file is read, and run in the audit's one
snapshot on every state a series reaches.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from vpbench.dataset.audit_result import CheckResult
from vpbench.errors import BadInputError, read_text_file

_KEYS = frozenset({"sql", "examples", "description"})


class ChecksFileError(BadInputError):
    """A checks file vpbench cannot use; nothing was run."""


@dataclass(frozen=True)
class UserCheck:
    """One check of a checks file."""

    name: str
    description: str
    count_sql: str
    examples_sql: str
    path: Path
    line: int

    def run(self, conn: psycopg.Connection[Any], sample_size: int) -> CheckResult:
        """Its count and examples on ``conn`` (inside the audit's transaction)."""
        try:
            with conn.transaction():  # a savepoint: a failing check names itself
                rows = conn.execute(_query(self.count_sql)).fetchall()
                examples: tuple[str, ...] = ()
                if self.examples_sql and sample_size:
                    found = conn.execute(_query(self.examples_sql)).fetchmany(sample_size)
                    examples = tuple(str(row[0]) for row in found)
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
            raise ChecksFileError(f"check {self.name} failed: {message}", path=self.path,
                                  line=self.line, sqlstate=exc.sqlstate) from None  # fmt: skip
        if len(rows) != 1 or len(rows[0]) != 1 or not isinstance(rows[0][0], int):
            shape = f"{len(rows)} row(s)" if len(rows) != 1 else f"{rows[0]!r}"
            raise ChecksFileError(
                f"check {self.name}: its sql must return one count, it returned {shape}",
                path=self.path, line=self.line, hint="e.g. SELECT count(*) FROM ... WHERE ...",
            )  # fmt: skip
        return CheckResult(self.name, self.description, True, int(rows[0][0]), examples,
                           group="yours")  # fmt: skip


def _query(text: str) -> sql.SQL:
    """A checks file's query as psycopg runs it (it was parsed as one SELECT on load)."""
    return sql.SQL(text)


def load_checks(path: Path) -> tuple[UserCheck, ...]:
    """Every check of the file at ``path``, in file order; refused with ``file:line`` when
    a check is malformed or its SQL does not parse as one read-only query."""
    text = read_text_file(path, "checks file", "TOML")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChecksFileError(f"invalid TOML: {exc}", path=path) from None
    lines = text.splitlines()
    checks = document.get("checks")
    if not isinstance(checks, dict) or not checks:
        raise ChecksFileError("no [checks.NAME] tables", path=path)
    found = []
    for name, spec in checks.items():
        line = _line_of(lines, name)
        problem = ""
        if not isinstance(spec, dict):
            problem = "is not a table"
        elif unknown := sorted(set(spec) - _KEYS):
            problem = f"has unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}"
        elif not isinstance(spec.get("sql"), str) or not spec["sql"].strip():
            problem = "has no sql (a query returning one count)"
        if problem:
            raise ChecksFileError(f"checks.{name} {problem}", path=path, line=line)
        for key in ("sql", "examples"):
            if key in spec:
                _check_query(name, key, str(spec[key]), path, line)
        found.append(UserCheck(name, str(spec.get("description", name)), spec["sql"].strip(),
                               str(spec.get("examples", "")).strip(), path, line))  # fmt: skip
    return tuple(found)


def _check_query(name: str, key: str, text: str, path: Path, line: int) -> None:
    """One read-only query (SELECT, VALUES, WITH ... SELECT), by PostgreSQL's parser."""
    from pglast import parse_sql
    from pglast.ast import SelectStmt
    from pglast.parser import ParseError

    try:
        statements = parse_sql(text)
    except ParseError as exc:
        raise ChecksFileError(f"checks.{name}.{key} does not parse: {exc.args[0]}", path=path,
                              line=line) from None  # fmt: skip
    if len(statements) != 1 or not isinstance(statements[0].stmt, SelectStmt):
        raise ChecksFileError(f"checks.{name}.{key} must be one SELECT query", path=path,
                              line=line)  # fmt: skip


def _line_of(lines: list[str], name: str) -> int:
    """The line of ``[checks.NAME]`` (1 when the table is written inline)."""
    for number, line in enumerate(lines, start=1):
        if line.strip().replace(" ", "") in (f"[checks.{name}]", f'[checks."{name}"]'):
            return number
    return 1
