"""The shape every results document must have to be read, as pydantic models: the fields
the readers use, with their types; anything else a document holds is kept as it is. A
document that does not fit is bad input naming its file and the first field that is wrong.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class PlanSummaryShape(_Open):
    fingerprint: str | None = None


class EntryShape(_Open):
    """One measured query or scenario of a run, or of one state of a paired session."""

    name: str
    kind: str
    status: str
    samples_ns: list[int]
    summary: dict[str, Any] | None
    explains: list[ExplainShape]
    plan_summaries: dict[str, PlanSummaryShape] | None = None
    rounds: list[int] | None = None
    target_ms: float | None = None


class PostgresShape(_Open):
    server_version_num: int | None = None


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


class SummaryRowShape(_Open):
    migration: str
    title: str
    passed: bool
    headlines: list[dict[str, Any]]
    audit_violations: list[int]
    index_bytes_added: int
    reversible: bool
    document: str | None


class SummaryShape(_Open):
    kind: Literal["steps-summary"]
    steps: list[SummaryRowShape]
    answers: dict[str, str]


Shape = RunShape | PairedShape | SummaryShape
"""a results document read as the model of its kind"""

SHAPES: dict[str, type[Shape]] = {
    "run": RunShape,
    "ab": PairedShape,
    "step": PairedShape,
    "steps-summary": SummaryShape,
}


def check_shape(document: dict[str, Any], path: object, *, written: bool = False) -> Shape:
    """``document`` (read from ``path``) as the model of its kind, refused unless it has
    that shape. A
    document vpbench is about to write (``written``) that does not is vpbench's own bug,
    raised as ``MalformedResultError``, not bad input."""
    kind = document.get("kind")
    shape = SHAPES.get(kind) if isinstance(kind, str) else None
    if shape is None:
        known = ", ".join(sorted(SHAPES))
        raise ResultsFormatError(f"unknown kind of results document {kind!r}; known: {known}",
                                 path=str(path))  # fmt: skip
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
