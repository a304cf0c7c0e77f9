"""The one error hierarchy: expected failures carry an exit code and a location."""

from __future__ import annotations

from pathlib import Path


class VpbenchError(Exception):
    """An expected failure the CLI shows as one line; anything else is a bug."""

    exit_code: int = 1

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


class UsageError(VpbenchError):
    """Bad command-line input: unknown profile, bad knob value and the like."""

    exit_code = 2


class ServerError(VpbenchError):
    """The database server cannot be reached, started or stopped."""


class UnsafeOperationError(VpbenchError):
    """A destructive operation on a database vpbench does not own."""


class SeedError(VpbenchError):
    """Seeding failed; the database was left as it was before."""


class SeedInterruptedError(SeedError):
    """Ctrl-C during seeding: the transaction was rolled back."""

    exit_code = 130


class RunInterruptedError(VpbenchError):
    """Ctrl-C during a run: no results file was written."""

    exit_code = 130


class StepsInterruptedError(VpbenchError):
    """Ctrl-C during ``steps``: the database matches its ledger; the backup is kept."""

    exit_code = 130


class FixtureError(VpbenchError):
    """The reference schema or another fixture file is missing or broken."""
