"""Summarise and fingerprint PostgreSQL plans from ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``.

Plain ``EXPLAIN (FORMAT JSON)`` works too: whatever needs actuals (rows scanned, estimate
errors, timings) is then simply absent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

# What the plan *shape* is made of: never costs, rows, timings, buffers, or conditions
# (filters and index conditions carry the parameter values).
SHAPE_KEYS = (
    "Node Type", "Parent Relationship", "Subplan Name", "Join Type", "Strategy",
    "Partial Mode", "Operation", "Command", "Parallel Aware", "Scan Direction",
    "Relation Name", "Index Name", "CTE Name", "Function Name",
    "Sort Key", "Presorted Key", "Group Key",
)  # fmt: skip
INDEX_NODES = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})
# Nodes that read their whole input before returning a row, so a Limit above them does not
# cut their children short.
BLOCKING_NODES = frozenset({"Sort", "Hash", "Aggregate"})
# Constants that can appear in sort and group keys (``ORDER BY a <-> '(1,2)'``).
_LITERAL = re.compile(r"'(?:[^']|'')*'|(?<![\w$.])\d+(?:\.\d+)?")
_AGGREGATES = {"Hashed": "HashAggregate", "Sorted": "GroupAggregate", "Mixed": "MixedAggregate"}


@dataclass(frozen=True)
class SeqScan:
    """A sequential scan and how many rows it read: (returned + filtered out) x loops."""

    relation: str
    rows_scanned: int


@dataclass(frozen=True)
class EstimateError:
    """The planner's per-loop row estimate against the actual rows of one node."""

    node: str
    estimated_rows: float
    actual_rows: float
    factor: float
    """(larger + 1) / (smaller + 1): 1.0 is a perfect estimate"""


@dataclass(frozen=True)
class WorstNode:
    """The node with the most time of its own (total x loops, minus its children's)."""

    node: str
    exclusive_ms: float


@dataclass(frozen=True)
class PlanSummary:
    """What matters in one plan, small enough to store with every run."""

    node_types: dict[str, int]
    seq_scans: tuple[SeqScan, ...]
    indexes_used: tuple[str, ...]
    worst_estimate: EstimateError | None
    worst_node: WorstNode | None
    shared_hit_blocks: int
    shared_read_blocks: int
    temp_written_blocks: int
    disk_sorts: tuple[str, ...]
    planning_ms: float | None
    execution_ms: float | None
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` reverses it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanSummary:
        """Rebuild a summary from ``to_dict`` output (e.g. read back from a results file)."""
        estimate, worst = data.get("worst_estimate"), data.get("worst_node")
        return cls(
            **{
                **data,
                "node_types": dict(data["node_types"]),
                "seq_scans": tuple(SeqScan(**scan) for scan in data["seq_scans"]),
                "indexes_used": tuple(data["indexes_used"]),
                "worst_estimate": None if estimate is None else EstimateError(**estimate),
                "worst_node": None if worst is None else WorstNode(**worst),
                "disk_sorts": tuple(data["disk_sorts"]),
            }
        )


def summarise_plan(
    explain: list[dict[str, Any]] | dict[str, Any], *, big_table_rows: int = 10_000
) -> PlanSummary:
    """Summarise one EXPLAIN (FORMAT JSON) document: the list psycopg returns, or its item.

    ``seq_scans`` keeps only scans that read at least ``big_table_rows`` rows.
    """
    document = _document(explain)
    root: dict[str, Any] = document["Plan"]
    nodes = list(_walk(root))
    node_types: dict[str, int] = {}
    for node, _ in nodes:
        kind = str(node.get("Node Type", "?"))
        node_types[kind] = node_types.get(kind, 0) + 1
    scans = (_seq_scan(node) for node, _ in nodes if node.get("Node Type") == "Seq Scan")
    estimates = (_estimate_error(node) for node, cut_short in nodes if not cut_short)
    estimates_ok = [e for e in estimates if e is not None]
    exclusive = [w for w in (_exclusive_time(node) for node, _ in nodes) if w is not None]
    indexes = {n.get("Index Name") for n, _ in nodes if n.get("Node Type") in INDEX_NODES}
    return PlanSummary(
        node_types=node_types,
        seq_scans=tuple(s for s in scans if s is not None and s.rows_scanned >= big_table_rows),
        indexes_used=tuple(sorted(str(index) for index in indexes if index)),
        worst_estimate=max(estimates_ok, key=lambda e: e.factor, default=None),
        worst_node=max(exclusive, key=lambda w: w.exclusive_ms, default=None),
        shared_hit_blocks=int(root.get("Shared Hit Blocks", 0)),
        shared_read_blocks=int(root.get("Shared Read Blocks", 0)),
        temp_written_blocks=int(root.get("Temp Written Blocks", 0)),
        disk_sorts=tuple(describe_node(n) for n, _ in nodes if _sorted_on_disk(n)),
        planning_ms=_optional_float(document.get("Planning Time")),
        execution_ms=_optional_float(document.get("Execution Time")),
        fingerprint=plan_fingerprint(root),
    )


def plan_fingerprint(plan: dict[str, Any]) -> str:
    """16 hex chars identifying the plan's shape, whatever the parameter values and timings.

    Takes a plan node (``document["Plan"]``) or the whole document.
    """
    root = plan.get("Plan", plan)
    canonical = json.dumps(_shape(root), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def describe_node(node: dict[str, Any]) -> str:
    """A label like EXPLAIN's text format: ``Index Scan using t_a_idx on t``, ``Sort``."""
    kind = str(node.get("Node Type", "?"))
    strategy = node.get("Strategy")
    if kind == "Aggregate":
        kind = _AGGREGATES.get(str(strategy), kind)
        if node.get("Partial Mode") in ("Partial", "Finalize"):
            kind = f"{node['Partial Mode']} {kind}"
    elif kind == "SetOp" and strategy == "Hashed":
        kind = "HashSetOp"
    elif kind == "ModifyTable" and "Operation" in node:
        kind = str(node["Operation"])
    elif kind in ("Nested Loop", "Hash Join", "Merge Join"):
        join = node.get("Join Type", "Inner")
        if join != "Inner":
            kind = f"{kind.removesuffix(' Join')} {join} Join"
    if node.get("Parallel Aware"):
        kind = f"Parallel {kind}"
    if node.get("Scan Direction") == "Backward":
        kind = f"{kind} Backward"
    index = node.get("Index Name")
    target = node.get("Relation Name") or node.get("CTE Name") or node.get("Function Name")
    if index and target:
        return f"{kind} using {index} on {target}"
    if index or target:
        return f"{kind} on {index or target}"
    return kind


def _document(explain: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    document = explain[0] if isinstance(explain, list) and explain else explain
    if isinstance(document, dict) and isinstance(document.get("Plan"), dict):
        return document
    if isinstance(document, dict) and "Node Type" in document:
        return {"Plan": document}
    raise ValueError("not an EXPLAIN (FORMAT JSON) document: expected a 'Plan' object")


def _walk(node: dict[str, Any], cut_short: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every node in order, with whether a Limit above may have stopped it early."""
    yield node, cut_short
    kind = node.get("Node Type")
    blocking = kind in BLOCKING_NODES and node.get("Strategy") != "Sorted"
    below = (cut_short or kind == "Limit") and not blocking
    for child in node.get("Plans", ()):
        yield from _walk(child, below)


def _shape(node: dict[str, Any]) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    for key in SHAPE_KEYS:
        if key in node:
            value = node[key]
            shape[key] = (
                [_LITERAL.sub("?", str(v)) for v in value] if key.endswith("Key") else value
            )
    shape["Plans"] = [_shape(child) for child in node.get("Plans", ())]
    return shape


def _executed(node: dict[str, Any]) -> bool:
    return float(node.get("Actual Loops", 0)) > 0


def _seq_scan(node: dict[str, Any]) -> SeqScan | None:
    if not _executed(node) or "Actual Rows" not in node:
        return None
    per_loop = float(node["Actual Rows"]) + float(node.get("Rows Removed by Filter", 0))
    rows = round(per_loop * float(node["Actual Loops"]))
    return SeqScan(str(node.get("Relation Name", "?")), rows)


def _estimate_error(node: dict[str, Any]) -> EstimateError | None:
    if not _executed(node) or "Actual Rows" not in node or "Plan Rows" not in node:
        return None
    estimated, actual = float(node["Plan Rows"]), float(node["Actual Rows"])
    factor = (max(estimated, actual) + 1) / (min(estimated, actual) + 1)
    return EstimateError(describe_node(node), estimated, actual, factor)


def _total_ms(node: dict[str, Any]) -> float:
    return float(node.get("Actual Total Time", 0.0)) * float(node.get("Actual Loops", 0))


def _exclusive_time(node: dict[str, Any]) -> WorstNode | None:
    if not _executed(node) or "Actual Total Time" not in node:
        return None
    # Parallel workers and InitPlans can make children add up to more than the parent.
    own = _total_ms(node) - sum(_total_ms(child) for child in node.get("Plans", ()))
    return WorstNode(describe_node(node), max(own, 0.0))


def _sorted_on_disk(node: dict[str, Any]) -> bool:
    if node.get("Node Type") != "Sort":
        return False
    spaces = [node, *node.get("Workers", ())]
    return any(space.get("Sort Space Type") == "Disk" for space in spaces)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
