"""Run documents: one versioned JSON file per run, written atomically, loaded into pandas.

Readers refuse documents newer than ``SCHEMA_VERSION`` and upgrade older ones step by step.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpbench.errors import VpbenchError

if TYPE_CHECKING:
    import pandas as pd
from vpbench.measure.runner import EntryResult

SCHEMA_VERSION = 2
"""2: entries of paired sessions (step, ab) carry the round of each sample ("rounds"); step
documents and summaries describe write cost per table ("writes")."""
KIND_RUN = "run"
KIND_STEP = "step"
KIND_AB = "ab"


class ResultsFormatError(VpbenchError):
    """A results file that cannot be read: not JSON, not ours, or from a newer vpbench."""

    exit_code = 2


def entry_document(entry: EntryResult) -> dict[str, Any]:
    latency = entry.latency
    return {
        "name": entry.name,
        "kind": entry.kind,
        "workload": entry.workload,
        "path": entry.path,
        "variant": entry.variant,
        "sql": entry.sql,
        "target_ms": entry.target_ms,
        "clients": entry.clients,
        "status": entry.status,
        "error": entry.error,
        "timeouts": entry.timeouts,
        "wall_seconds": entry.wall_seconds,
        "throughput_per_s": entry.throughput_per_s,
        "meets_target": entry.meets_target,
        "summary": latency.to_dict() if latency else None,
        "server_p50_ms": entry.server_p50_ms,
        "samples_ns": list(entry.samples_ns),
        "member_samples_ns": {k: list(v) for k, v in entry.member_samples_ns.items()},
        "rounds": list(entry.rounds),
        "explains": [
            {
                "execution_ms": e.execution_ms,
                "planning_ms": e.planning_ms,
                "shared_hit_blocks": e.shared_hit_blocks,
                "shared_read_blocks": e.shared_read_blocks,
                "fingerprint": e.fingerprint,
            }
            for e in entry.explains
        ],
        "plan_summaries": {k: v.to_dict() for k, v in entry.plan_summaries.items()},
        "plan": entry.plan,
    }


def run_document(metadata: dict[str, Any], entries: tuple[EntryResult, ...]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND_RUN,
        "metadata": metadata,
        "entries": [entry_document(e) for e in entries],
    }


def utc_stamp(when: datetime | None = None) -> str:
    """A sortable UTC timestamp for file and folder names: 20261125T215727Z."""
    return (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def run_file_name(label: str | None, when: datetime | None = None) -> str:
    stamp = utc_stamp(when)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label or "run")
    return f"{stamp}-{safe}.json"


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` and prove a file can be written there, before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vpbench-probe-"):
            pass
    except OSError as exc:
        raise VpbenchError(
            f"cannot write results: {exc.strerror or exc}", path=folder, hint="choose another --out"
        ) from None
    return folder


def write_document(document: dict[str, Any], path: Path) -> Path:
    """Write JSON atomically: a temp file in the same folder, then rename over the target."""
    ensure_writable(path.parent)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, allow_nan=False, default=str)
            out.write("\n")
        Path(temp).chmod(0o644)  # mkstemp makes it private; results are meant to be shared
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def read_document(path: Path) -> dict[str, Any]:
    """Read a results document, refusing newer schema versions and upgrading older ones."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsFormatError(f"not a readable results file: {exc}", path=path) from None
    if not isinstance(document, dict) or "schema_version" not in document:
        raise ResultsFormatError("not a vpbench results file (no schema_version)", path=path)
    version = document["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsFormatError(
            f"results schema version {version} is newer than this vpbench reads ({SCHEMA_VERSION})",
            path=path,
            hint="upgrade vpbench",
        )
    upgraded: dict[str, Any] = document
    while upgraded["schema_version"] < SCHEMA_VERSION:
        upgraded = _UPGRADES[upgraded["schema_version"]](upgraded)
    return upgraded


def _upgrade_1_to_2(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1 paired sessions kept ``options.repeat`` samples per round, in order; its
    step documents timed one batch insert per state (rows/s), which version 2 replaces by
    per-table write costs it cannot recompute (they become unknown)."""
    upgraded = dict(document, schema_version=2)
    if document.get("kind") in (KIND_STEP, KIND_AB):
        block = max(int(document.get("metadata", {}).get("options", {}).get("repeat") or 1), 1)
        for state in ("before", "after"):
            upgraded[state] = [
                {**e, "rounds": [i // block for i in range(len(e.get("samples_ns") or []))]}
                for e in document.get(state, [])
            ]
    if document.get("kind") == KIND_STEP:
        upgraded.setdefault("writes", [])
    if document.get("kind") == "steps-summary":
        upgraded["steps"] = [{**row, "writes": row.get("writes", [])} for row in document["steps"]]
    return upgraded


_UPGRADES = {1: _upgrade_1_to_2}


_ENTRY_FIELDS = ("workload", "status", "variant", "target_ms", "clients", "timeouts",
                 "server_p50_ms", "meets_target", "error")  # fmt: skip
_SUMMARY_FIELDS = ("p50_ms", "p95_ms", "p99_ms", "cv")


@dataclass(frozen=True)
class RunFrames:
    """Loaded runs: ``samples`` has one row per timed execution."""

    samples: pd.DataFrame
    entries: pd.DataFrame
    explains: pd.DataFrame
    runs: pd.DataFrame


def _entry_groups(document: dict[str, Any]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """A run's entries, or a step's entries per state ("before" / "after")."""
    if document.get("kind") in (KIND_STEP, KIND_AB):
        labels = document.get("labels", {"before": "before", "after": "after"})
        return [(labels["before"], document["before"]), (labels["after"], document["after"])]
    return [(None, document["entries"])]


def load(path_or_dir: str | Path) -> RunFrames:
    """Load run and step documents (a file, or a folder searched recursively) into
    DataFrames; ``samples`` has one row per timed execution, with the run and, for a step,
    the state ("before"/"after") it was measured in."""
    import pandas as pd  # imported here: loading is the only part that needs it

    root = Path(path_or_dir)
    paths = sorted(root.rglob("*.json")) if root.is_dir() else [root]
    documents = [(p, read_document(p)) for p in paths]
    documents = [(p, d) for p, d in documents if d.get("kind") in (KIND_RUN, KIND_STEP, KIND_AB)]
    if not documents:
        raise ResultsFormatError("no run results found", path=root)
    samples, entries, explains, runs = [], [], [], []
    for path, document in documents:
        meta = document["metadata"]
        run_id = path.stem
        runs.append(
            {
                "run": run_id,
                "path": str(path),
                "kind": document["kind"],
                "label": meta.get("label"),
                "timestamp": meta.get("timestamp"),
                "git_commit": meta.get("git_commit"),
                "server_version": meta.get("postgres", {}).get("server_version"),
                "profile": meta.get("seed", {}).get("profile"),
                "migrations": ",".join(meta.get("applied_migrations", [])),
            }
        )
        for state, group in _entry_groups(document):
            for entry in group:
                key = {"run": run_id, "state": state, "name": entry["name"], "kind": entry["kind"]}
                summary = entry.get("summary") or {}
                entries.append(
                    {
                        **key,
                        **{field: entry[field] for field in _ENTRY_FIELDS},
                        **{stat: summary.get(stat) for stat in _SUMMARY_FIELDS},
                    }
                )
                for index, ns in enumerate(entry["samples_ns"]):
                    samples.append({**key, "sample": index, "latency_ms": ns / 1e6})
                for index, explain in enumerate(entry["explains"]):
                    explains.append({**key, "sample": index, **explain})
    columns = ["run", "state", "name", "kind", "sample", "latency_ms"]
    return RunFrames(
        samples=pd.DataFrame(samples, columns=columns),
        entries=pd.DataFrame(entries),
        explains=pd.DataFrame(explains),
        runs=pd.DataFrame(runs),
    )
