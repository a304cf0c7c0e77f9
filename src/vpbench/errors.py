"""The one error hierarchy. Every expected failure is a ``VpbenchError`` with a location
(``path``, ``line``), a ``hint`` and, from the server, its SQLSTATE; anything else is a bug.

Errors say *what kind* of failure they are, never which exit status it gets: the CLI entry
point (``vpbench.cli.main``) is the one place that turns kinds into statuses. The kinds:

- ``BadInputError`` — input vpbench cannot use: an option, a workload or migrations file,
  a results document, an output folder, two runs that cannot be compared;
- ``InterruptError`` — Ctrl-C, after vpbench cleaned up;
- ``CheckFailedError`` — the command ran and found what it checks for: a regression, a
  target breach, a failed query or step, audit violations;
- any other ``VpbenchError`` — something failed: the server, a migration, a backup.

Each stage's errors are here too, so that every module can raise them without importing
another stage, and ``read_text_file``, which turns a user's file that is not UTF-8 text
into one of them for every stage that reads one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class VpbenchError(Exception):
    """An expected failure the CLI shows as one line; anything else is a bug."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.hint = hint
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        location = ""
        if self.path is not None:
            location = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        text = f"{location}{self.message}"
        if self.sqlstate:
            text += f" [SQLSTATE {self.sqlstate}]"
        if self.hint:
            text += f" ({self.hint})"
        return text


# The kinds.


class BadInputError(VpbenchError):
    """Input vpbench cannot use; nothing was changed or written."""


class InterruptError(VpbenchError):
    """Ctrl-C: what was half done was rolled back or kept safe, nothing half-written."""


class CheckFailedError(VpbenchError):
    """The command ran to the end and found a failure it checks for."""


# Bad input.


class UsageError(BadInputError):
    """Bad command-line input: unknown profile, bad knob value, unwritable --out."""


class Located(Protocol):
    """Where a problem is: what ``WorkloadError`` lists."""

    @property
    def message(self) -> str: ...
    @property
    def path(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...


class WorkloadError(BadInputError):
    """One or more problems in workload files, each ``file:line: message``, shown on one
    line (a count, then each problem after a semicolon)."""

    def __init__(self, issues: Sequence[Located]) -> None:
        first = issues[0]
        super().__init__(first.message, path=first.path, line=first.line)
        self.issues = tuple(issues)

    def __str__(self) -> str:
        if len(self.issues) == 1:
            return str(self.issues[0])
        return f"{len(self.issues)} problems: " + "; ".join(str(i) for i in self.issues)


class UnreadableTextError(BadInputError):
    """A file that should be text (TOML, SQL) and is not UTF-8, or cannot be read."""


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


class SamplerError(BadInputError):
    """A parameter source failed or returned nothing usable."""


class AppCallableError(BadInputError):
    """A workload's ``app = "module:function"`` cannot be imported or is not there."""


class ResultsFormatError(BadInputError):
    """A results file that cannot be read: not JSON, not ours, or from a newer vpbench."""


class IncomparableError(BadInputError):
    """The two runs cannot be compared: different profile, seed or server, or no entry in
    common."""


# Failures, by stage.


class ServerError(VpbenchError):
    """The database server cannot be reached, started or stopped."""


class StatisticsUnavailableError(ServerError):
    """pg_stat_statements is not loaded or not readable on the server."""


class UnsafeOperationError(BadInputError):
    """A destructive operation on a database vpbench does not own (without --force)."""


class BackupError(VpbenchError):
    """A backup could not be made or restored; the source database is untouched."""


class FixtureError(VpbenchError):
    """The reference schema or another fixture file is missing or broken."""


class SeedError(VpbenchError):
    """Seeding failed; the database was left as it was before."""


class MigrationsFormatError(FixtureError, BadInputError):
    """A migrations folder, alembic project, SQL pair or side file that vpbench cannot read."""


class AuditError(VpbenchError):
    """The integrity audit could not run its queries."""


class MigrationError(VpbenchError):
    """A migration failed, was edited after it was applied, or cannot be found."""


class UnknownMigrationError(MigrationError, BadInputError):
    """A migration target that is not in the series."""


# Interruptions.


class SeedInterruptedError(SeedError, InterruptError):
    """Ctrl-C during seeding: the transaction was rolled back."""


class RunInterruptedError(InterruptError):
    """Ctrl-C during a run: no results file was written."""


class StepsInterruptedError(InterruptError):
    """Ctrl-C during ``steps``: the database matches its ledger; the backup is kept."""
