"""The README documents every command, and its first two commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

import click

from vpbench.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]


def command_names(group: click.Group, prefix: str = "vpbench") -> list[str]:
    names = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names += command_names(command, f"{prefix} {name}")
        else:
            names.append(f"{prefix} {name}")
    return names


def test_readme_documents_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    tour = readme.replace("\\|", "|")
    missing = []
    for name in command_names(cli):
        group, _, leaf = name.rpartition(" ")
        # "vpbench db start | stop | status" documents each of them.
        if name not in tour and not any(
            line.startswith(f"| `{group} ") and leaf in line for line in tour.splitlines()
        ):
            missing.append(name)
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```bash\n")[1:3]]
    test_command = next(line for line in blocks[1].splitlines() if not line.startswith("#"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "vpbench steps" in blocks[0]
