"""What ``vpbench steps`` costs at each size: wall time, seconds per phase, the copies it
made, the most extra disk it took and the harness's share of the wall time.

    python bench/scale.py [--profile tiny --profile small ...] [--source SRC] [--out FILE]

Each profile runs ``vpbench steps --profile P`` in a child process on the embedded server
(as the embedded server, so every paired round starts from empty shared buffers)
(VPBENCH_HOME decides its filesystem; ``vpbench db volume create`` makes a cloning one).
``--source`` runs another checkout's ``src`` folder instead (the code before a change, for
its figures measured the same way). The child's console is read as it comes: seeding ends
where "step 1/" is printed, and from then on the server's free disk is read every half
second; the peak extra disk is the most free space the steps took beyond what the seeded
database held, compared with that database's size. Phases, copies and the harness's share
come from the series' documents where the code wrote them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from vpbench.reporting.units import human_bytes
from vpbench.server.disk import filesystem_type
from vpbench.server.embedded import EmbeddedPostgres

DATABASE = "vpbench_scale"


class DiskWatch:
    """The least free space seen on a folder's filesystem, read every half second."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.least: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> int:
        free = shutil.disk_usage(self.folder).free
        self.least = free
        self._thread.start()
        return free

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            free = shutil.disk_usage(self.folder).free
            self.least = free if self.least is None else min(self.least, free)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_profile(profile: str, source: Path | None, out: Path) -> dict[str, Any]:
    server = EmbeddedPostgres()
    dsn = server.start().dsn(DATABASE)
    dsn_variables = ("VPBENCH_DSN", "DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE")
    env = {k: v for k, v in os.environ.items() if k not in dsn_variables}
    env |= {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    command = [sys.executable, "-m", "vpbench", "steps", "--profile", profile,
               "--db", DATABASE, "--out", str(out), "--force"]  # fmt: skip
    watch = DiskWatch(server.data_dir)
    began = time.perf_counter()
    seeded_at, database_bytes, free_at_seed = None, None, None
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)  # fmt: skip
    assert child.stdout is not None
    for line in child.stdout:
        print(f"  [{profile}] {line.rstrip()}", flush=True)
        if seeded_at is None and "step 1/" in line:
            seeded_at = time.perf_counter() - began
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            database_bytes = int(row[0]) if row else None
            free_at_seed = watch.start()
    status = child.wait()
    wall = time.perf_counter() - began
    watch.stop()
    peak = free_at_seed - watch.least if free_at_seed is not None and watch.least else None
    figures: dict[str, Any] = {
        "profile": profile,
        "source": str(source or "this checkout"),
        "exit": status,
        "filesystem": filesystem_type(server.data_dir),
        "wall_s": wall,
        "seed_s": seeded_at,
        "steps_s": wall - seeded_at if seeded_at is not None else None,
        "database_bytes": database_bytes,
        "peak_extra_bytes": peak,
    }
    figures.update(_from_documents(out))
    return figures


def _from_documents(out: Path) -> dict[str, Any]:
    """Phases, harness share and copies, where the series' documents hold them."""
    found: dict[str, Any] = {"phases": None, "harness_share": None, "copies": []}
    summary = out / "summary.json"
    if summary.is_file():
        spent = json.loads(summary.read_text(encoding="utf-8")).get("time")
        if spent:
            found["phases"] = {p["phase"]: p["seconds"] for p in spent["phases"]}
            found["harness_share"] = spent["harness_share"]
    for step in sorted(out.glob("0*.json")):
        document = json.loads(step.read_text(encoding="utf-8"))
        found["copies"] += document.get("copies") or []
    return found


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| profile | code | filesystem | seed | steps | DB size | peak extra disk | copies "
        "(method: count, s, disk) | harness share | slowest phases |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        size, peak = row["database_bytes"], row["peak_extra_bytes"]
        peak_text = "n/a" if peak is None else human_bytes(peak)
        if peak is not None and size:
            peak_text += f" ({peak / size:.2f}x DB)"
        phases = row["phases"] or {}
        slowest = ", ".join(f"{p} {s:.0f} s" for p, s in
                            sorted(phases.items(), key=lambda kv: -kv[1])[:4])  # fmt: skip
        share, status = row["harness_share"], row["exit"]
        failed = "" if status == 0 else f" (exit {status})"
        lines.append(
            f"| {row['profile']} | {row['source']} | {row['filesystem']} "
            f"| {_seconds(row['seed_s'])} | {_seconds(row['steps_s'])}{failed} "
            f"| {human_bytes(size) if size else 'n/a'} | {peak_text} | {_copies(row['copies'])} "
            f"| {'n/a' if share is None else f'{share:.0%}'} | {slowest or 'n/a'} |"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def _copies(copies: list[dict[str, Any]]) -> str:
    if not copies:
        return "not recorded"
    parts = []
    for method in sorted({c["method"] for c in copies}):
        same = [c for c in copies if c["method"] == method]
        added = [c["added_bytes"] for c in same if c.get("added_bytes") is not None]
        disk = human_bytes(sum(added)) if added else "n/a"
        parts.append(f"{method}: {len(same)}, {sum(c['seconds'] for c in same):.1f} s, {disk}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", action="append", dest="profiles")
    parser.add_argument("--source", type=Path, help="a checkout whose src/ to run instead")
    parser.add_argument("--out", type=Path, default=Path("results/scale.json"))
    args = parser.parse_args(argv)
    rows = []
    for profile in args.profiles or ["tiny", "small", "medium", "large"]:
        folder = args.out.parent / f"scale-{profile}-{time.strftime('%Y%m%dT%H%M%S')}"
        rows.append(run_profile(profile, args.source, folder))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(args.out.read_text()) if args.out.is_file() else []
        args.out.write_text(json.dumps([*previous, rows[-1]], indent=2), encoding="utf-8")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
