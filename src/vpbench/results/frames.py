"""Results documents as pandas DataFrames: one row per timed execution, entry, EXPLAIN
run and run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpbench.errors import ResultsFormatError
from vpbench.results.documents import (
    KIND_AB,
    KIND_RUN,
    KIND_STEP,
    read_document,
)

if TYPE_CHECKING:
    import pandas as pd

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
                "nightly": "nightly" in meta,
                "after_label": (document.get("labels") or {}).get("after", "after")
                if document["kind"] != KIND_RUN
                else None,
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
