"""Generated input for every file reader (hypothesis): a workload TOML, a migrations folder,
a results JSON document. Each outcome is a success or a bad-input error, never anything
else (a KeyError, a TypeError, a traceback)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpbench.analysis.comparison import compare_sides, load_sides
from vpbench.errors import BadInputError
from vpbench.migrations.sources import discover_migrations
from vpbench.reporting.markdown import build_report
from vpbench.results.documents import (
    SCHEMA_VERSION,
    read_document,
    results_folder,
    write_document,
)
from vpbench.results.shapes import MalformedResultError
from vpbench.workload.spec import load_workload

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""as many examples as the profile draws (conftest.py: 100 in the suite, 1000 exploring)"""
REPORT_SETTINGS = settings(SETTINGS, max_examples=settings().max_examples // 4)
"""for the tests that render a report from every example (a quarter of a second each)"""

WORKLOAD_KEYS = ["queries", "params", "scenarios", "workload", "sql", "source", "value", "pool",
                 "target_ms", "variants", "from", "steps", "app", "skew", "description",
                 "sampler", "uniform", "zipf", "a", "b"]  # fmt: skip
RESULT_KEYS = ["schema_version", "kind", "metadata", "entries", "before", "after", "steps",
               "answers", "name", "samples_ns", "summary", "status", "explains", "migration",
               "title", "passed", "headlines", "audit_violations", "index_bytes_added",
               "reversible", "document", "label", "rounds", "labels"]  # fmt: skip
KINDS = ["run", "ab", "step", "steps-summary", "comparison", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 1_000_000), st.floats(allow_nan=False),
    st.text(max_size=30), st.sampled_from(KINDS),
    st.sampled_from(["SELECT 1", "SELECT :x", "SELECT $1", "SELECT id FROM videos", "::"]),
)  # fmt: skip


def _documents(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from(keys), inner, max_size=5),
        ),
        max_leaves=25,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items() if v is not None)
        return "{ " + pairs + " }"
    return json.dumps("" if value is None else str(value))


def _toml(document: Any) -> str:
    """TOML tables of a generated document (its top-level tables, each a table of values)."""
    if not isinstance(document, dict):
        return f"x = {_toml_value(document)}\n"
    lines = []
    for key, value in document.items():
        if isinstance(value, dict):
            for name, inner in value.items():
                lines.append(f'[{key}."{name}"]')
                items = inner.items() if isinstance(inner, dict) else [("value", inner)]
                lines += [f'"{k}" = {_toml_value(v)}' for k, v in items if v is not None]
        elif value is not None:
            lines.append(f'"{key}" = {_toml_value(value)}')
    return "\n".join(lines) + "\n"


def _only_bad_input(read: Callable[[], object]) -> None:
    """Run ``read``: it succeeds or raises a bad-input error; anything else fails the test."""
    with contextlib.suppress(BadInputError):
        read()


@SETTINGS
@given(st.one_of(st.binary(max_size=300), _documents(WORKLOAD_KEYS).map(_toml),
                 st.text(max_size=300)))  # fmt: skip
def test_a_workload_file_is_read_or_refused(content: bytes | str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        _only_bad_input(lambda: load_workload(path, ("0001_a", "0002_b")))


step_files = st.fixed_dictionaries(
    {},
    optional={
        "up.sql": st.one_of(st.text(max_size=80), st.sampled_from(["SELECT 1;", "BEGIN;", ""])),
        "down.sql": st.text(max_size=80),
        "migration.toml": _documents(
            ["title", "why", "max_stall", "downtime", "transactional", "fixes", "notes", "typo"]
        ).map(_toml),
    },
)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "0001_a",
                "0002_b",
                "bad name",
                "0001_a.up.sql",
                "0001_a.down.sql",
                "0002_b.up.sql",
                "alembic.ini",
            ]
        ),
        step_files,
        max_size=4,
    ),
)
def test_a_migrations_folder_is_read_or_refused(layout: dict[str, dict[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, files in layout.items():
            if name.endswith((".sql", ".ini")):
                (root / name).write_text(next(iter(files.values()), ""), encoding="utf-8")
                continue
            (root / name).mkdir()
            for file, text in files.items():
                (root / name / file).write_text(text, encoding="utf-8")
        _only_bad_input(lambda: discover_migrations(root))


@SETTINGS
@given(st.one_of(_documents(RESULT_KEYS), st.text(max_size=100)))
def test_a_results_document_is_read_or_refused(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "doc.json"
        text = document if isinstance(document, str) else json.dumps(document)
        path.write_text(text, encoding="utf-8")

        def read() -> object:
            base, new, paired = load_sides([path])
            return compare_sides(base, new, paired_session=paired)

        _only_bad_input(read)


VALID = {
    "run": Path(__file__).parent / "data" / "runs" / "legacy.json",
    "step": Path(__file__).parent / "data" / "steps-v2" / "0001_quiz_attempt_links.json",
}


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into the document's dicts and lists, leaves first (a few levels deep)."""
    found: list[tuple[Any, ...]] = []
    if len(prefix) < 5 and isinstance(document, dict):
        for key, value in document.items():
            found += [*_paths(value, (*prefix, key)), (*prefix, key)]
    elif len(prefix) < 5 and isinstance(document, list):
        for index, value in enumerate(document[:3]):
            found += [*_paths(value, (*prefix, index)), (*prefix, index)]
    return found


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> tuple[Any, Any]:
    """A valid document of ``kind`` and a copy with a few fields deleted or replaced."""
    original = json.loads(VALID[kind].read_text())
    document = json.loads(VALID[kind].read_text())
    candidates = _paths(document)
    for _ in range(draw(st.integers(1, 3))):
        _mutate(draw, document, draw(st.sampled_from(candidates)))
    return original, document


def _mutate(draw: st.DrawFn, document: Any, path: tuple[Any, ...]) -> None:
    """Delete the field at ``path``, or replace it by a generated value."""
    parent = document
    try:
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(scalars | st.lists(scalars, max_size=2))
    except (KeyError, IndexError, TypeError):
        return


STEPS_FOLDER = Path(__file__).parent / "data" / "steps-tiny"


@st.composite
def broken_series(draw: st.DrawFn) -> tuple[str, Any]:
    """One document of a stored steps folder (its summary or a step) with a few fields
    deleted or replaced, and its file name."""
    name = draw(st.sampled_from(sorted(p.name for p in STEPS_FOLDER.glob("*.json"))))
    document = json.loads((STEPS_FOLDER / name).read_text())
    candidates = _paths(document)
    for _ in range(draw(st.integers(1, 3))):
        _mutate(draw, document, draw(st.sampled_from(candidates)))
    return name, document


@pytest.mark.slow
@REPORT_SETTINGS
@given(broken_series())
def test_a_steps_folder_with_a_document_broken_is_reported_or_refused(
    broken: tuple[str, Any],
) -> None:
    name, document = broken
    with tempfile.TemporaryDirectory() as folder:
        series = Path(folder) / "series"
        shutil.copytree(STEPS_FOLDER, series)
        (series / name).write_text(json.dumps(document))
        _only_bad_input(lambda: build_report([series], Path(folder) / "report"))


@pytest.mark.slow
@REPORT_SETTINGS
@given(st.one_of(mutated("run"), mutated("step")))
def test_a_valid_document_with_fields_broken_is_read_or_refused(pair: tuple[Any, Any]) -> None:
    original, broken = pair
    with tempfile.TemporaryDirectory() as folder:
        base, new = Path(folder) / "base.json", Path(folder) / "new.json"
        base.write_text(json.dumps(original))
        new.write_text(json.dumps(broken))
        paths = [new] if broken.get("kind") == "step" else [base, new]

        def read() -> object:
            before, after, paired = load_sides(paths)
            return compare_sides(before, after, paired_session=paired, force=True)

        _only_bad_input(read)
        _only_bad_input(lambda: build_report([new], Path(folder) / "report"))


def test_an_older_document_that_cannot_be_upgraded_is_refused(tmp_path: Path) -> None:
    """Found by the property test above: a version 2 step document whose availability
    timeline holds a row that is not a list crashed the upgrade with a TypeError."""
    document = json.loads(VALID["step"].read_text())
    assert document["schema_version"] == 2 and document["availability"]["timeline"]
    document["availability"]["timeline"][0] = None
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    with pytest.raises(BadInputError, match="cannot upgrade this schema version 2 document"):
        load_sides([path])
    # The same document with its rows intact is upgraded and read (twin).
    path.write_text(VALID["step"].read_text())
    before, after, paired = load_sides([path])
    assert paired and before.entries.keys() == after.entries.keys()


def test_a_document_is_written_only_in_the_shape_its_readers_check(tmp_path: Path) -> None:
    """Writers and readers share the shapes: a document its readers would refuse is never
    written (a vpbench bug, not the user's input), and one they read is (twin)."""
    entry = {"name": "q", "kind": "query", "status": "ok", "samples_ns": [1_000_000],
             "summary": None, "explains": []}  # fmt: skip
    good = {"schema_version": SCHEMA_VERSION, "kind": "run", "metadata": {}, "entries": [entry]}
    bad = dict(good, entries=[dict(entry, samples_ns="fast")])
    with pytest.raises(MalformedResultError, match=r"entries\.0\.samples_ns"):
        write_document(bad, tmp_path / "bad.json")
    assert not list(tmp_path.iterdir())
    assert read_document(write_document(good, tmp_path / "good.json"))["entries"] == [entry]


def test_a_refused_run_leaves_no_empty_results_folder(tmp_path: Path) -> None:
    """Found by the checkout guard in conftest.py: ``steps`` refused for lack of disk left
    an empty ``results/steps-<stamp>`` behind."""
    made = tmp_path / "steps-new"
    with pytest.raises(BadInputError), results_folder(made):
        raise BadInputError("refused")
    assert not made.exists()
    # Twins: a folder that was there stays, and so does one the work wrote into.
    with pytest.raises(BadInputError), results_folder(tmp_path):
        raise BadInputError("refused")
    assert tmp_path.is_dir()
    with pytest.raises(KeyboardInterrupt), results_folder(made) as out:
        (out / "0001_a.json").write_text("{}")
        raise KeyboardInterrupt
    assert (made / "0001_a.json").is_file()


def test_a_summary_of_a_copy_says_where_the_copy_came_from(tmp_path: Path) -> None:
    """The report describes a copy by its source, time, method, reason and seconds: a
    summary of a copy without them is refused naming the field (a KeyError, exit 70)."""
    summary = json.loads((STEPS_FOLDER / "summary.json").read_text())
    copied = {"kind": "copy", "source": "staging", "copied_at": "2026-12-05T01:00:00Z",
              "method": "template", "why": "idle", "seconds": 0.2}  # fmt: skip
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary | {"data": {"kind": "copy", "source": "staging"}}))
    with pytest.raises(BadInputError, match=r"data: Value error, copied_at: Field required"):
        read_document(path)
    path.write_text(json.dumps(summary | {"data": copied}))  # twin: complete, read
    assert read_document(path)["data"]["method"] == "template"


def test_a_step_without_its_checks_is_refused_in_a_series(tmp_path: Path) -> None:
    """Found by the steps-folder property test: a step document without ``checks`` was a
    KeyError in the series report (exit 70)."""
    series = tmp_path / "series"
    shutil.copytree(STEPS_FOLDER, series)
    step = series / "0005_computed_scores.json"
    step.write_text(json.dumps({k: v for k, v in json.loads(step.read_text()).items()
                                if k != "checks"}))  # fmt: skip
    with pytest.raises(BadInputError, match=r"0005_computed_scores\.json: .*checks: Field"):
        build_report([series], tmp_path / "report")
    assert not (tmp_path / "report").exists()
