"""A table of bad inputs, each answered by one line on stderr, its exit status and no file
written: every command that connects, given an unreachable server and a malformed DSN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKLOAD = Path(__file__).resolve().parents[1] / "workloads" / "video_page.toml"
UNREACHABLE = (
    "postgresql://postgres@127.0.0.1:1/x",
    1,
    "cannot connect to PostgreSQL at 127.0.0.1:1/",
)
MALFORMED = ("postgresql://[bad", 2, "is not a valid PostgreSQL connection string")

COMMANDS = [
    ["db", "drop", "--db", "x"],
    ["seed", "--profile", "tiny"],
    ["audit"],
    ["run", str(WORKLOAD), "--out", "{out}"],
    ["capture", "--out", "{out}/captured.toml"],
    ["coverage", str(WORKLOAD)],
    ["migrate", "status"],
    ["migrate", "up"],
    ["migrate", "down"],
    ["steps", "--profile", "tiny", "--out", "{out}"],
    ["ab", str(WORKLOAD), "--a", "x", "--b", "y", "--out", "{out}"],
    ["ci", "pr", "--base", "HEAD", "--out", "{out}"],
    ["ci", "nightly", "--profile", "tiny", "--out", "{out}", "--history", "{out}/history"],
]  # fmt: skip


@pytest.mark.parametrize("dsn", [UNREACHABLE, MALFORMED], ids=["unreachable", "malformed"])
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_every_command_that_connects_fails_in_one_line(
    command: list[str], dsn: tuple[str, int, str], tmp_path: Path
) -> None:
    value, code, expected = dsn
    out = tmp_path / "out"
    argv = [part.replace("{out}", str(out)) for part in command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "VPBENCH_DSN"))}
    done = subprocess.run([sys.executable, "-m", "vpbench", *argv, "--dsn", value],
                          capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], check=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert written == []
