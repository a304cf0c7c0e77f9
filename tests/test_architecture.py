"""The package's shape: no import cycle between modules or between pipeline stages, and the
library (everything but the CLI and the pytest plugin) never imports click, rich or pytest.

Imports are read with ``ast`` from the source files, including those inside functions and
``TYPE_CHECKING`` blocks: a cycle hidden there is still a cycle of the design."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import vpbench

PACKAGE = Path(vpbench.__file__).parent
SHELLS = ("vpbench.cli", "vpbench.pytest_plugin", "vpbench.__main__")
"""modules that may use the user-interface libraries"""
INTERFACE_LIBRARIES = {"click", "rich", "pytest"}


def module_sources(root: Path, package: str = "vpbench") -> dict[str, str]:
    """Every module under ``root`` by dotted name (a package by its own name)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def imported_names(source: str) -> set[str]:
    """Every module name an import statement in ``source`` names (``from a.b import c``
    names ``a.b`` and ``a.b.c``, as ``c`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports."""
    return {
        module: {name for name in imported_names(source) if name in sources and name != module}
        for module, source in sources.items()
    }


def stage_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def stage_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Stage (``vpbench.measure``) -> the other stages its modules import."""
    stages: dict[str, set[str]] = {}
    for module, imports in graph.items():
        targets = stages.setdefault(stage_of(module), set())
        targets.update(stage_of(i) for i in imports if stage_of(i) != stage_of(module))
    return stages


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for following in sorted(graph.get(node, ())):
            if state.get(following) == "open":
                return [*path[path.index(following) :], following]
            if following not in state and (cycle := visit(following)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def interface_imports(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Library modules that import a user-interface library, with what they import."""
    found = {}
    for module, source in sources.items():
        if module.startswith(SHELLS):
            continue
        roots = {name.split(".")[0] for name in imported_names(source)}
        if roots & INTERFACE_LIBRARIES:
            found[module] = roots & INTERFACE_LIBRARIES
    return found


def test_no_module_imports_itself_back() -> None:
    assert find_cycle(import_graph(module_sources(PACKAGE))) is None


def test_pipeline_stages_import_one_way() -> None:
    assert find_cycle(stage_graph(import_graph(module_sources(PACKAGE)))) is None


def test_the_library_never_imports_click_rich_or_pytest() -> None:
    assert interface_imports(module_sources(PACKAGE)) == {}


def test_every_stage_is_a_package() -> None:
    stages = {stage_of(m) for m in module_sources(PACKAGE)} - {"vpbench"}
    expected = {"analysis", "cli", "dataset", "measure", "migrations", "reporting", "results",
                "server", "steps", "workload", "errors", "pytest_plugin", "__main__"}  # fmt: skip
    assert stages == {f"vpbench.{name}" for name in expected}


# The twins: the same checks on a small package that breaks each rule.


@pytest.fixture
def broken_package(tmp_path: Path) -> Path:
    root = tmp_path / "vpbench"
    for path, text in {
        "__init__.py": "",
        "measure/__init__.py": "",
        "measure/runner.py": "from vpbench.analysis.verdicts import judge\n",
        "analysis/__init__.py": "",
        "analysis/verdicts.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from vpbench.measure import runner\n",
        "reporting/__init__.py": "",
        "reporting/charts.py": "def draw():\n    import rich.console\n",
        "steps/__init__.py": "",
        "steps/pipeline.py": "from vpbench.reporting.charts import draw\n",
        "steps/summary.py": "from vpbench.measure.runner import x\n",
        "cli/__init__.py": "import click\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_twin_a_cycle_through_type_checking_is_found(broken_package: Path) -> None:
    cycle = find_cycle(import_graph(module_sources(broken_package)))
    assert cycle == ["vpbench.analysis.verdicts", "vpbench.measure.runner",
                     "vpbench.analysis.verdicts"]  # fmt: skip


def test_twin_a_cycle_between_stages_is_found(broken_package: Path) -> None:
    (broken_package / "analysis/verdicts.py").write_text("")
    (broken_package / "measure/plan.py").write_text("from vpbench.steps import summary\n")
    assert find_cycle(import_graph(module_sources(broken_package))) is None
    assert find_cycle(stage_graph(import_graph(module_sources(broken_package)))) == [
        "vpbench.measure", "vpbench.steps", "vpbench.measure"]  # fmt: skip


def test_twin_a_library_import_of_rich_is_found(broken_package: Path) -> None:
    assert interface_imports(module_sources(broken_package)) == {
        "vpbench.reporting.charts": {"rich"}
    }
