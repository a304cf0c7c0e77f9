"""Results documents: one versioned JSON file per run, step or session, written atomically.

Readers refuse documents newer than ``SCHEMA_VERSION`` and upgrade older ones step by step.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vpbench.errors import ResultsFormatError, UsageError, VpbenchError
from vpbench.migrations.touched import touched_tables
from vpbench.results.shapes import Shape, check_kind, check_shape

SCHEMA_VERSION = 5
"""2: entries of paired sessions (step, ab) carry the round of each sample ("rounds"); step
documents and summaries describe write cost per table ("writes"). 3: a step's
``availability`` tells requests blocked by the migration's locks ("blocked", the figure its
budget judges) from requests slowed without a lock wait ("slowed"). 4: step and ab
documents store their paired verdicts ("verdicts", judged once when the session ended);
older ones are judged by their readers. 5: step documents record the WAL ``up`` wrote at
rest ("up_wal_bytes") and the tables it touched with their rows ("touched"), which
``predict`` fits its costs against."""
KIND_RUN = "run"
KIND_STEP = "step"
KIND_AB = "ab"


def run_document(metadata: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's document from its metadata and its entries' documents."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND_RUN,
        "metadata": metadata,
        "entries": entries,
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
        raise UsageError(
            f"cannot write results: {exc.strerror or exc}", path=folder, hint="choose another --out"
        ) from None
    return folder


@contextmanager
def results_folder(folder: Path) -> Iterator[Path]:
    """``folder``, made and proven writable (``ensure_writable``) for the work inside; if
    that work fails or is refused before it writes anything there, a folder made here is
    removed again, so that no empty results folder is left behind."""
    existed = folder.exists()
    ensure_writable(folder)
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def write_document(document: dict[str, Any], path: Path) -> Path:
    """Write JSON atomically: a temp file in the same folder, then rename over the target.
    A results document must have the shape its readers check (else it is vpbench's bug)."""
    check_shape(document, path, written=True)
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


def history_documents(history: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """The nights kept in a history folder, in file-name order (names start with a UTC
    stamp): run documents, and the paired sessions ``ci nightly`` writes (``ab`` with
    ``metadata.nightly``); and one line per file that cannot be read (its name and why)."""
    nights, unreadable = [], []
    for path in sorted(history.glob("*.json")) if history.is_dir() else []:
        try:
            document = read_document(path)
        except VpbenchError as exc:
            unreadable.append(f"{path.name}: {exc.message}")
            continue
        kind = document.get("kind")
        if kind == KIND_RUN or (kind == KIND_AB and "nightly" in document["metadata"]):
            nights.append((path, document))
    return nights, unreadable


def read_document(path: Path) -> dict[str, Any]:
    """Read a results document, refusing newer schema versions and upgrading older ones."""
    return _read_checked(path)[0]


def read_shaped(path: Path) -> Shape:
    """Read a results document (as ``read_document``) as the typed model of its kind."""
    return _read_checked(path)[1]


def _read_checked(path: Path) -> tuple[dict[str, Any], Shape]:
    """The document at ``path`` upgraded to the current version, and its model."""
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
    if version < min(_UPGRADES, default=SCHEMA_VERSION):
        raise ResultsFormatError(f"results schema version {version} is older than any this "
                                 "vpbench can upgrade", path=path)  # fmt: skip
    check_kind(document, path)
    upgraded: dict[str, Any] = document
    while (older := upgraded["schema_version"]) < SCHEMA_VERSION:
        try:
            upgraded = _UPGRADES[older](upgraded)
        except KeyError as exc:
            why = f"cannot upgrade this schema version {older} document: it has no {exc} field"
            raise ResultsFormatError(why, path=path) from None
        except (TypeError, ValueError, AttributeError) as exc:
            why = f"cannot upgrade this schema version {older} document: a field is wrong ({exc})"
            raise ResultsFormatError(why, path=path) from None
    return upgraded, check_shape(upgraded, path)


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


def _upgrade_2_to_3(document: dict[str, Any]) -> dict[str, Any]:
    """Version 2 measured one stall per kind, a request's latency beyond the at-rest p99 of
    its kind for whatever reason: lock waits and contention cannot be told apart from it.
    The stall is kept (``stall_ms``), blocked and slowed become unknown, and the verdict
    judged then stays."""
    upgraded = dict(document, schema_version=3)
    found = document.get("availability") if document.get("kind") == KIND_STEP else None
    if isinstance(found, dict):
        kinds = ("read", "write")
        upgraded["availability"] = {
            **{k: v for k, v in found.items() if k not in ("longest_stall_ms", "worst")},
            "stall_ms": found.get("longest_stall_ms") or {},
            "blocked": dict.fromkeys(kinds),
            "blocked_ms": dict.fromkeys(kinds),
            "blocked_requests": dict.fromkeys(kinds),
            "slowed": dict.fromkeys(kinds),
            "timeline": [[*row, None] for row in found.get("timeline") or []],
        }
    return upgraded


def _upgrade_3_to_4(document: dict[str, Any]) -> dict[str, Any]:
    """Version 3 stored no verdicts: readers judge its sessions themselves."""
    return dict(document, schema_version=4)


def _upgrade_4_to_5(document: dict[str, Any]) -> dict[str, Any]:
    """Version 4 step documents did not record up's WAL (unknown) nor the tables it touched,
    which their lock holds and rows say (the oldest recorded no lock holds: none known)."""
    upgraded = dict(document, schema_version=5)
    if document.get("kind") == KIND_STEP:
        holds = upgraded.setdefault("lock_holds", [])
        rows = (document.get("checks") or {}).get("rows_before") or {}
        costs = document.get("costs") or []
        added = (cost.get("table", "") for cost in costs if cost.get("bytes_before") == 0)
        upgraded["touched"] = touched_tables((hold["lock"] for hold in holds), rows, added)
        upgraded["up_wal_bytes"] = upgraded["up_wal_scope"] = None
    return upgraded


_UPGRADES = {1: _upgrade_1_to_2, 2: _upgrade_2_to_3, 3: _upgrade_3_to_4, 4: _upgrade_4_to_5}
