"""What ``steps`` takes and gives: its options, one report per migration, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpbench.analysis.verdicts import DEFAULT_THRESHOLD, Threshold
from vpbench.dataset.audit import AuditReport
from vpbench.measure.interleave import PairedOptions
from vpbench.measure.runner import EntryResult
from vpbench.measure.writecost import WriteCost, WriteOptions
from vpbench.migrations.folder import Migration
from vpbench.migrations.locking import DEFAULT_LOCKS, LockPolicy, LockRetry
from vpbench.server.maintenance import Settled
from vpbench.steps.checks import Equivalence, RelationCost


@dataclass(frozen=True)
class StepsOptions:
    paired: PairedOptions = field(default_factory=lambda: PairedOptions(budget_seconds=25.0))
    """how the two states are measured against each other; a step's session spends less
    than ``ab``'s (60 s), so that ``steps`` on ``small`` stays within a few minutes"""
    writes: WriteOptions = field(default_factory=WriteOptions)
    """how the inserts are timed"""
    threshold: Threshold = DEFAULT_THRESHOLD
    """the smallest change a verdict (faster, slower, regression) is given for"""
    locks: LockPolicy = DEFAULT_LOCKS
    """lock_timeout and retries of applying each step"""
    keep_backups: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "paired": self.paired.__dict__,
            "writes": self.writes.__dict__,
            "threshold": str(self.threshold),
            "locks": self.locks.to_dict(),
            "keep_backups": self.keep_backups,
        }


@dataclass(frozen=True)
class StepReport:
    migration: Migration
    backup_method: str
    up_seconds: float
    lock_retries: tuple[LockRetry, ...]
    """attempts of ``up`` that timed out waiting for a lock"""
    audit_before: AuditReport
    audit_after: AuditReport
    before: tuple[EntryResult, ...]
    after: tuple[EntryResult, ...]
    rounds: int
    """paired rounds the session ran (entries stop earlier once precise)"""
    measure_seconds: float
    reversible: bool
    reversibility_problems: tuple[str, ...]
    equivalence: tuple[Equivalence, ...]
    unexpected_changes: tuple[str, ...]
    costs: tuple[RelationCost, ...]
    writes: tuple[WriteCost, ...]
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    quarantined: dict[str, int]
    settled_before: Settled
    settled_after: Settled
    threshold: Threshold = DEFAULT_THRESHOLD
    path: Path | None = None

    @property
    def data_intact(self) -> bool:
        return all(
            self.rows_before[t] == self.rows_after[t] + self.quarantined.get(t, 0)
            for t in self.rows_before
        )

    @property
    def passed(self) -> bool:
        return self.reversible and self.data_intact and not self.unexpected_changes


@dataclass(frozen=True)
class StepsResult:
    steps: tuple[StepReport, ...]
    out_dir: Path
    summary_path: Path
    seconds: float

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)
