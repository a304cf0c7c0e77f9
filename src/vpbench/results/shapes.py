"""The shape every results document must have to be read, as pydantic models: the fields
the readers use, with their types; anything else a document holds is kept as it is. A
document that does not fit is bad input naming its file and the first field that is wrong.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vpbench.errors import ResultsFormatError


class MalformedResultError(RuntimeError):
    """vpbench built a results document of the wrong shape: a bug, never the user's input."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExplainShape(_Open):
    """One EXPLAIN (ANALYZE, BUFFERS) execution of an entry."""

    shared_hit_blocks: int
    shared_read_blocks: int
    fingerprint: str | None = None


class PlanNodeShape(_Open):
    node: str
    exclusive_ms: float


class PlanSummaryShape(_Open):
    fingerprint: str | None = None
    worst_node: PlanNodeShape | None = None


class LatencyShape(_Open):
    """An entry's latency summary (``analysis.latency``)."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    cv: float | None = None


class EntryShape(_Open):
    """One measured query or scenario of a run, or of one state of a paired session."""

    name: str
    kind: str
    status: str
    samples_ns: list[int]
    summary: LatencyShape | None
    explains: list[ExplainShape]
    plan_summaries: dict[str, PlanSummaryShape] | None = None
    rounds: list[int] | None = None
    target_ms: float | None = None
    workload: str | None = None
    meets_target: bool | None = None
    server_p50_ms: float | None = None


class PostgresShape(_Open):
    server_version_num: int | None = None
    version: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class TableMaintenanceShape(_Open):
    vacuums: int | None = None
    analyzes: int | None = None


class DatabaseShape(_Open):
    name: str | None = None
    oid: int | None = None
    maintenance: dict[str, TableMaintenanceShape] = Field(default_factory=dict)


class MetadataShape(_Open):
    """What makes runs comparable (the fields comparisons read)."""

    label: str | None = None
    server: str | None = None
    seed: dict[str, Any] = Field(default_factory=dict)
    postgres: PostgresShape = Field(default_factory=PostgresShape)
    database: DatabaseShape | None = None
    applied_migrations: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class RunShape(_Open):
    kind: Literal["run"]
    metadata: MetadataShape
    entries: list[EntryShape]


class JudgementShape(_Open):
    """A stored verdict (``Judgement.to_dict``)."""

    verdict: Literal["faster", "slower", "unchanged", "inconclusive"]
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    p_value: float | None
    mde: float | None
    reason: str


class StoredJudgementShape(JudgementShape):
    samples_digest: str


class SessionVerdictsShape(_Open):
    """The verdicts a paired session stored, and the rule they were judged by."""

    threshold: str
    alpha: float
    seed: int
    resamples: int
    entries: dict[str, StoredJudgementShape]


class LabelsShape(_Open):
    before: str
    after: str


class PairedShape(_Open):
    """``ab`` and ``step``: both states measured in one session."""

    kind: Literal["ab", "step"]
    metadata: MetadataShape
    before: list[EntryShape]
    after: list[EntryShape]
    labels: LabelsShape | None = None
    verdicts: SessionVerdictsShape | None = None


# A step document: what the series report reads besides the two states.


class StepMigrationShape(_Open):
    id: str
    title: str
    why: str
    checksum: str | None = None
    online: str | None = None
    downtime: str | None = None
    max_stall_ms: float | None = None

    @model_validator(mode="after")
    def _downtime_has_a_budget(self) -> StepMigrationShape:
        if self.downtime and self.max_stall_ms is None:
            raise ValueError("a step that declares downtime needs its max_stall_ms")
        return self


class BlockedShape(_Open):
    """The longest wait of one kind of request on the migration's locks."""

    kind: str
    name: str
    ms: float
    low_ms: float
    high_ms: float
    waited_for: str | None = None
    migration_holds: str | None = None
    migration_waits: str | None = None
    statement: str | None = None


class SlowedShape(_Open):
    ratio: float | None
    low: float | None = None
    high: float | None = None
    slowest: str | None = None
    slowest_ms: float | None = None
    slowest_at_rest_p99_ms: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> SlowedShape:
        if self.low is not None and self.high is None:
            raise ValueError("an interval needs both ends")
        if self.slowest and (self.slowest_ms is None or self.slowest_at_rest_p99_ms is None):
            raise ValueError("the slowest request needs its ms and its at-rest p99")
        return self


class AvailabilityShape(_Open):
    """What ``up`` did to the live app (schema 3; older ones are upgraded to it)."""

    budget_ms: float
    passed: bool
    blocked: dict[str, BlockedShape | None]
    slowed: dict[str, SlowedShape | None]
    failed: dict[str, int]
    timeline: list[tuple[str, float, float, str, float | None]] = Field(default_factory=list)
    statements: list[dict[str, Any]] = Field(default_factory=list)
    stall_ms: dict[str, float] | None = None

    @model_validator(mode="after")
    def _both_kinds(self) -> AvailabilityShape:
        if missing := {"read", "write"} - set(self.blocked):
            raise ValueError(f"blocked has no {sorted(missing)[0]}")
        return self


class OldAppShape(_Open):
    deploy_order: str
    declared: str
    old_app_breaks: list[str]
    new_needs_new_schema: list[str]
    refused_under_load: list[str] = Field(default_factory=list)


class StepChecksShape(_Open):
    old_app: OldAppShape | None = None
    rows_before: dict[str, int] = Field(default_factory=dict)


class JudgedQueryShape(_Open):
    query: str
    judgement: JudgementShape


class IndexGainShape(_Open):
    index: str
    bytes: int
    used_by: list[JudgedQueryShape]
    insert_wal_bytes: tuple[float, float] | None = None
    sharing_write_cost: int
    foreign_keys: list[str] = Field(default_factory=list)


class AuditCheckShape(_Open):
    name: str
    violations: int
    applicable: bool
    group: str | None = None
    examples: list[Any] = Field(default_factory=list)


class AuditShape(_Open):
    checks: list[AuditCheckShape]


class LockHoldShape(_Open):
    """A lock ``up`` took at rest, held from ``from_s`` until ``until_s`` (seconds into it)."""

    lock: str
    line: int
    from_s: float
    until_s: float


class RelationCostShape(_Open):
    """A table or index the step added, removed or resized."""

    name: str
    kind: str
    bytes_before: int
    bytes_after: int
    table: str = ""


class StepShape(PairedShape):
    """A step of a migration series: its two states and what it did."""

    kind: Literal["step"]
    migration: StepMigrationShape
    up_seconds: float
    up_wal_bytes: int | None = None
    """None: measured before vpbench recorded it"""
    up_wal_scope: Literal["session", "server"] | None = None
    """``up``'s session alone, or the whole server's WAL (before PostgreSQL 18)"""
    touched: dict[str, int]
    """the tables ``up`` took a lock on, with their rows before it"""
    lock_holds: list[LockHoldShape]
    costs: list[RelationCostShape]
    availability: AvailabilityShape | None = None
    checks: StepChecksShape
    indexes: list[IndexGainShape] = Field(default_factory=list)
    audit_before: AuditShape
    audit_after: AuditShape


# The summary of a series.


class HeadlineShape(_Open):
    label: str
    before_p95_ms: float | None
    after_p95_ms: float | None
    judgement: JudgementShape | None = None


class WriteSummaryShape(_Open):
    table: str
    wal_bytes_before: float | None = None
    wal_bytes_after: float | None = None
    wal_change: float | None = None
    timing: JudgementShape | None = None
    error: str | None = None


class SummaryRowShape(_Open):
    migration: str
    title: str
    passed: bool
    headlines: list[HeadlineShape]
    audit_violations: tuple[int, int]
    index_bytes_added: int
    reversible: bool
    writes: list[WriteSummaryShape] = Field(default_factory=list)
    deploy_order: str = ""
    old_app_undeclared: bool = False
    document: str


class PhaseShape(_Open):
    phase: str
    seconds: float
    share: float


class SeriesTimeShape(_Open):
    phases: list[PhaseShape]
    harness_share: float
    peak_disk_bytes: int | None = None


class CopiedDataShape(_Open):
    kind: Literal["copy"]
    source: str
    copied_at: str
    method: str
    why: str
    seconds: float


class SummaryShape(_Open):
    kind: Literal["steps-summary"]
    steps: list[SummaryRowShape]
    answers: dict[str, str]
    data: dict[str, Any] | None = None
    """a seeded profile and seed, or (``kind = "copy"``) a ``CopiedDataShape``"""
    time: SeriesTimeShape | None = None
    seconds: float | None = None

    @field_validator("data")
    @classmethod
    def _copy_described(cls, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is not None and data.get("kind") == "copy":
            try:
                CopiedDataShape.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return data

    @model_validator(mode="after")
    def _timed(self) -> SummaryShape:
        if self.time is not None and self.seconds is None:
            raise ValueError("a summary with its time needs its seconds")
        if missing := {"what_broke", "biggest_gain"} - set(self.answers):
            raise ValueError(f"answers has no {sorted(missing)[0]}")
        return self


Shape = RunShape | PairedShape | StepShape | SummaryShape
"""a results document read as the model of its kind"""

SHAPES: dict[str, type[Shape]] = {
    "run": RunShape,
    "ab": PairedShape,
    "step": StepShape,
    "steps-summary": SummaryShape,
}


def check_kind(document: dict[str, Any], path: object) -> type[Shape]:
    """The model of ``document``'s kind; an unknown kind is refused naming the known ones."""
    kind = document.get("kind")
    shape = SHAPES.get(kind) if isinstance(kind, str) else None
    if shape is None:
        known = ", ".join(sorted(SHAPES))
        raise ResultsFormatError(f"unknown kind of results document {kind!r}; known: {known}",
                                 path=str(path))  # fmt: skip
    return shape


def check_shape(document: dict[str, Any], path: object, *, written: bool = False) -> Shape:
    """``document`` (read from ``path``) as the model of its kind, refused unless it has
    that shape. A
    document vpbench is about to write (``written``) that does not is vpbench's own bug,
    raised as ``MalformedResultError``, not bad input."""
    shape, kind = check_kind(document, path), document["kind"]
    try:
        return shape.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if written:
            raise MalformedResultError(f"vpbench made a {kind} document its readers refuse: "
                                       f"{where}: {first['msg']}") from exc  # fmt: skip
        raise ResultsFormatError(f"not a valid {kind} document: {where}: {first['msg']}",
                                 path=str(path)) from None  # fmt: skip
