"""What ``steps`` takes and gives: its options, one report per migration, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vpbench.analysis.session_verdicts import SessionVerdicts, judge_session_pair
from vpbench.analysis.verdicts import DEFAULT_THRESHOLD, Judgement, Threshold
from vpbench.dataset.audit_result import AuditReport
from vpbench.dataset.checks_file import UserCheck
from vpbench.measure.availability import Availability
from vpbench.measure.interleave import PairedOptions
from vpbench.measure.runner import EntryResult
from vpbench.measure.traffic import DEFAULT_TRAFFIC, TrafficOptions
from vpbench.measure.writecost import WriteCost, WriteOptions
from vpbench.migrations.apply import LockHold, StatementRun
from vpbench.migrations.folder import Migration
from vpbench.migrations.locking import DEFAULT_LOCKS, LockPolicy, LockRetry
from vpbench.migrations.touched import touched_tables
from vpbench.server.backup import Backup
from vpbench.server.maintenance import Settled
from vpbench.server.wal import WalScope
from vpbench.steps.checks import Equivalence, RelationCost
from vpbench.steps.compatibility import OldAppCheck
from vpbench.steps.phases import SeriesTime


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
    traffic: TrafficOptions | None = DEFAULT_TRAFFIC
    """the live app's traffic while ``up`` is rehearsed; None: no rehearsal"""
    max_stall_ms: float = 1000.0
    """the longest stall of the app a step may cause, unless its migration.toml says"""
    keep_backups: bool = False
    checks: tuple[UserCheck, ...] = ()
    """a team's own integrity checks (``--checks``), run on every state beside the others"""

    def step_locks(self, migration: Migration) -> LockPolicy:
        """The lock policy ``migration`` is applied with: its lock_timeout at most half its
        stall budget when it is rehearsed under traffic (the same at rest, so that both
        applications wait alike)."""
        if self.traffic is None:
            return self.locks
        return self.locks.within(migration.stall_budget_ms(self.max_stall_ms))

    def to_dict(self) -> dict[str, Any]:
        return {
            "paired": self.paired.__dict__,
            "writes": self.writes.__dict__,
            "threshold": str(self.threshold),
            "locks": self.locks.to_dict(),
            "traffic": self.traffic.to_dict() if self.traffic else None,
            "max_stall_ms": self.max_stall_ms,
            "keep_backups": self.keep_backups,
            "checks": sorted({str(c.path) for c in self.checks}),
        }


@dataclass(frozen=True)
class StepReport:
    migration: Migration
    backup_method: str
    up_seconds: float
    up_wal_bytes: int
    """WAL written while ``up`` ran at rest"""
    up_wal_scope: WalScope
    """whose: ``up``'s session alone, or the whole server (before PostgreSQL 18)"""
    lock_retries: tuple[LockRetry, ...]
    """attempts of ``up`` that timed out waiting for a lock"""
    statements: tuple[StatementRun, ...]
    """``up``'s statements as the server ran them: time, locks, rewrites"""
    lock_holds: tuple[LockHold, ...]
    """every lock ``up`` took, from when until when"""
    availability: Availability | None
    """what ``up`` did to the live app (rehearsed on a copy under traffic)"""
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
    old_app: OldAppCheck
    """the app deployed before the step against the schema after it, and the reverse"""
    threshold: Threshold = DEFAULT_THRESHOLD
    copies: tuple[Backup, ...] = ()
    """every copy the step made (backup, rehearsal, after): method, seconds, bytes"""
    phases: dict[str, float] = field(default_factory=dict)
    """seconds of each phase (``steps.phases.PHASES``)"""
    peak_disk_bytes: int | None = None
    """the most disk the step's copies held at once (None: the disk is not visible)"""
    path: Path | None = None

    @cached_property
    def verdicts(self) -> SessionVerdicts:
        """The paired verdict on every entry both states ran (after against before),
        judged once for every reader."""
        return SessionVerdicts.judge(self.before, self.after, self.threshold)

    @cached_property
    def write_verdicts(self) -> dict[str, Judgement]:
        """The paired timing verdict on each table's INSERT that was timed on both states."""
        return {
            cost.table: judge_session_pair(
                cost.before_ns, cost.after_ns, cost.rounds, threshold=self.threshold
            )
            for cost in self.writes
            if cost.before_ns
        }

    @property
    def touched(self) -> dict[str, int]:
        """The tables ``up`` took a lock on or added to, with their rows before it."""
        locks = (hold.lock for hold in self.lock_holds)
        added = (cost.table for cost in self.costs if cost.bytes_before == 0)
        return touched_tables(locks, self.rows_before, added)

    @property
    def data_intact(self) -> bool:
        return all(
            self.rows_before[t] == self.rows_after.get(t, 0) + self.quarantined.get(t, 0)
            for t in self.rows_before
        )

    @property
    def available(self) -> bool:
        """Within its stall budget (true when not rehearsed)."""
        return self.availability is None or self.availability.passed

    @property
    def passed(self) -> bool:
        return (
            self.reversible
            and self.data_intact
            and not self.unexpected_changes
            and self.available
            and not self.old_app.undeclared
        )


@dataclass(frozen=True)
class StepsResult:
    steps: tuple[StepReport, ...]
    out_dir: Path
    summary_path: Path
    time: SeriesTime
    """the wall time and where it went"""
    data: str = ""
    """where the data came from: the profile and seed, or the copy of the team's source"""

    @property
    def seconds(self) -> float:
        return self.time.seconds

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)
