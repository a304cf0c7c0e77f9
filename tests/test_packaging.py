"""The wheel carries the reference files (fixtures/ and workloads/, kept at the top of the
repository) where an installed vpbench looks for them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vpbench.dataset import fixtures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("vpbench-*.whl")
    return built


def _reference_files() -> set[str]:
    return {
        f"vpbench/_reference/{path.relative_to(ROOT).as_posix()}"
        for folder in ("fixtures", "workloads")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_ships_every_reference_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _reference_files()
    assert {"vpbench/_reference/fixtures/schema/legacy.sql"} <= expected
    assert expected <= names
    assert "vpbench/py.typed" in names
    assert not any("__pycache__" in name for name in names)


def test_an_installed_copy_is_read_before_the_source_tree(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpacked as pip installs it, the package finds its own reference files."""
    zipfile.ZipFile(wheel).extractall(tmp_path)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vpbench.dataset.fixtures import fixtures_dir as f; print(f())",
        ],
        cwd=tmp_path.parent,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(found) == tmp_path / "vpbench" / "_reference" / "fixtures"
    # and this checkout (an editable install) reads the source tree's
    monkeypatch.delenv("VPBENCH_FIXTURES", raising=False)
    assert fixtures.fixtures_dir() == ROOT / "fixtures"
