"""The README documents every command, its first two commands are the ones CI runs, and every
module path the docs and docstrings cite exists."""

from __future__ import annotations

import importlib
import re
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


SQL_NAMES = {"vpbench.migrations", "vpbench.seed_info", "vpbench.conf", "vpbench.xfs"}
"""dotted names that are not Python: the ledger and seed tables in the vpbench schema, the
embedded server's settings file, the XFS image beside the cache folder"""


def test_every_module_path_the_docs_and_docstrings_name_resolves() -> None:
    """The docs and the code's docstrings cite modules and names as they are now (some cited
    vpbench.compare.* and vpbench.interleave, which had moved)."""
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "src").rglob("*.py")]
    cited = {
        name.rstrip(".")
        for path in files
        for name in re.findall(r"\bvpbench(?:\.[A-Za-z_][A-Za-z_0-9]*)+", path.read_text())
    }
    unresolved = sorted(name for name in cited - SQL_NAMES if not _resolves(name))
    assert unresolved == []


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_the_broken_reference_twin_does_not_resolve() -> None:
    assert not _resolves("vpbench.compare.judge") and not _resolves("vpbench.interleave")
    assert _resolves("vpbench.analysis.verdicts.judge")


def test_the_readme_names_each_commands_arguments_as_its_help_does() -> None:
    """The tour shows each command's arguments by the names ``--help`` gives them (it showed
    ``compare BASE NEW`` for a command whose help said ``RUNS...``)."""
    assert argument_mismatches((ROOT / "README.md").read_text()) == []
    # The twin: the row as it was.
    old = (ROOT / "README.md").read_text().replace("compare BASE [NEW]", "compare BASE NEW")
    assert argument_mismatches(old) == ["vpbench compare: BASE [NEW]"]


def argument_mismatches(readme: str) -> list[str]:
    """Each command's arguments, as --help names them, that its README row does not show."""
    rows = [line for line in readme.replace("\\|", "|").splitlines()
            if line.startswith("| `vpbench ")]  # fmt: skip
    differing = []
    for name in command_names(cli):
        command = _command(name)
        context = click.Context(command, info_name=name)
        shown = [p.make_metavar(context) for p in command.params if isinstance(p, click.Argument)]
        group, _, leaf = name.rpartition(" ")
        row = next((r for r in rows if r.startswith(f"| `{name}")), "") or next(
            (r for r in rows if r.startswith(f"| `{group} ") and f"{leaf} " in r), ""
        )
        differing += [f"{name}: {metavar}" for metavar in shown if metavar not in row]
    return differing


def _command(name: str) -> click.Command:
    found: click.Command = cli
    for part in name.split()[1:]:
        assert isinstance(found, click.Group)
        found = found.commands[part]
    return found
