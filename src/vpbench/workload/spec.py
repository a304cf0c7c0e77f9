"""Workload files: parse, validate (every error at once, as ``file:line: message``), resolve.

A workload file (TOML) names parameter samplers, queries with ``:name`` parameters and a
latency target, variants that replace a query's SQL from a given migration on, scenarios
(queries that render one page together) and application-layer versions (``module:function``
callables that do what the old app did). See docs/workloads.md.
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
import tomllib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pglast import parser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vpbench.errors import AppCallableError, Located, VpbenchError, WorkloadError, read_text_file
from vpbench.workload._toml_lines import TomlLines, decode_error_line

Scalar = str | int | float | bool
AppCallable = Callable[[Any, dict[str, Any]], Any]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_WORD = re.compile(r"^[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Issue:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.message}"
            if self.line
            else f"{self.path}: {self.message}"
        )


# -- the file format -------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WorkloadInfo(_Strict):
    name: str | None = None
    description: str = ""


class SourceVariantSpec(_Strict):
    from_migration: str = Field(alias="from")
    source: str
    description: str = ""


class ParamSpec(_Strict):
    source: str | None = None
    values: list[Scalar] | None = Field(default=None, min_length=1)
    value: Scalar | None = None
    range: list[int] | None = Field(default=None, min_length=2, max_length=2)
    provides: list[str] | None = Field(default=None, min_length=1)
    distribution: Literal["uniform", "zipf"] = "uniform"
    skew: float = Field(default=1.1, gt=0)
    pool: int = Field(default=100, ge=1)
    variants: list[SourceVariantSpec] = []

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        kinds = [k for k in ("source", "values", "value", "range") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of 'source' (SQL), 'values' (a list), 'value' or 'range' "
                "([low, high] integers)"
            )
        if self.provides is not None and self.source is None:
            raise ValueError("'provides' only applies to a 'source' query")
        if self.variants and self.source is None:
            raise ValueError("'variants' only apply to a 'source' query")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"'range' {self.range}: low must not exceed high")
        return self


class VariantSpec(_Strict):
    from_migration: str = Field(alias="from")
    sql: str
    description: str = ""


class QuerySpec(_Strict):
    sql: str
    description: str = ""
    target_ms: float | None = Field(default=None, gt=0)
    variants: list[VariantSpec] = []
    app: str | None = None


class ScenarioSpec(_Strict):
    queries: list[str] = Field(min_length=1)
    description: str = ""
    target_ms: float | None = Field(default=None, gt=0)
    app: str | None = None


class WorkloadSpec(_Strict):
    workload: WorkloadInfo = WorkloadInfo()
    params: dict[str, ParamSpec] = {}
    queries: dict[str, QuerySpec] = {}
    scenarios: dict[str, ScenarioSpec] = {}


# -- what the rest of vpbench uses ------------------------------------------------------


@dataclass(frozen=True)
class SqlText:
    """A statement as written (``:name`` parameters), as psycopg runs it (``%(name)s``) and
    as libpq prepares it (``$n``, numbered in the order of ``params``)."""

    source: str
    runnable: str
    params: tuple[str, ...]
    positional: str
    line: int | None = None
    """the workload file's line the statement starts on"""

    def line_at(self, offset: int) -> int | None:
        """The file's line of character ``offset`` (0-based) of ``positional``."""
        return None if self.line is None else self.line + self.positional.count("\n", 0, offset)


@dataclass(frozen=True)
class Variant:
    from_migration: str
    sql: SqlText


T = TypeVar("T")


def _in_force(
    base: T, variants: Iterable[tuple[str, T]], applied: Collection[str]
) -> tuple[str | None, T]:
    """The variant (migration id, value) of the latest applied migration, ``variants`` being
    in series order; else ``(None, base)``."""
    chosen: tuple[str | None, T] = (None, base)
    for migration, value in variants:
        if migration in applied:
            chosen = (migration, value)
    return chosen


@dataclass(frozen=True)
class SourceVariant:
    from_migration: str
    source: str


@dataclass(frozen=True)
class Parameter:
    """A sampler: values from a SQL source, a list, or one fixed value."""

    name: str
    provides: tuple[str, ...]
    source: str | None
    values: tuple[Scalar, ...] | None
    span: tuple[int, int] | None
    """``range = [low, high]``: every integer from low to high, like pgbench's random()"""
    distribution: str
    skew: float
    pool: int
    path: str
    line: int | None
    variants: tuple[SourceVariant, ...] = ()
    """sources that replace ``source`` once their migration is applied, in series order"""

    def source_for(self, applied: Collection[str]) -> str | None:
        """The source in force once ``applied`` migrations ran (latest wins), else the base."""
        variants = [(v.from_migration, v.source) for v in self.variants]
        return _in_force(self.source, variants, applied)[1]


@dataclass(frozen=True)
class Query:
    name: str
    workload: str
    path: str
    description: str
    sql: SqlText
    target_ms: float | None
    variants: tuple[Variant, ...]
    app: str | None

    def sql_for(self, applied: Collection[str]) -> tuple[str | None, SqlText]:
        """The variant in force once ``applied`` migrations ran (latest wins), else the base."""
        return _in_force(self.sql, [(v.from_migration, v.sql) for v in self.variants], applied)


@dataclass(frozen=True)
class Scenario:
    name: str
    workload: str
    path: str
    description: str
    queries: tuple[str, ...]
    target_ms: float | None
    app: str | None


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    description: str
    params: dict[str, Parameter]
    queries: dict[str, Query]
    scenarios: dict[str, Scenario]

    def provider_of(self, param: str) -> Parameter:
        return next(p for p in self.params.values() if param in p.provides)


def parse_sql(sql: str, line: int | None = None) -> SqlText:
    """Turn ``:name`` parameters into psycopg's ``%(name)s`` (and every ``%`` into ``%%``),
    found by PostgreSQL's own scanner (pglast): literals (E-strings included), quoted
    names, comments, dollar quotes and ``::`` casts are left alone. ``line``: the file's
    line ``sql`` starts on."""
    params: dict[str, int] = {}
    spans = _placeholders(sql)
    runnable, positional, at = [], [], 0
    for begins, ends, name in spans:
        params.setdefault(name, len(params) + 1)
        runnable += [sql[at:begins].replace("%", "%%"), f"%({name})s"]
        positional += [sql[at:begins], f"${params[name]}"]
        at = ends
    runnable.append(sql[at:].replace("%", "%%"))  # psycopg reads % even inside literals
    positional.append(sql[at:])
    leading = sql[: len(sql) - len(sql.lstrip())].count("\n")
    start = None if line is None else line + leading
    return SqlText(sql.strip(), "".join(runnable).strip(), tuple(params),
                   "".join(positional).strip(), start)  # fmt: skip


def _placeholders(sql: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of each ``:name``: a ``:`` token followed at once by a word (a
    ``::`` cast is one token of its own). SQL the scanner cannot read has none: the server
    names its error when the statement is prepared."""
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(sql)
    except ParseError:
        return []
    found = []
    for colon, word in itertools.pairwise(tokens):
        text = sql[word.start : word.end + 1]
        if colon.name == "ASCII_58" and word.start == colon.end + 1 and _WORD.match(text):
            found.append((colon.start, word.end + 1, text))
    return found


def load_workloads(
    paths: Iterable[str | Path], migration_ids: Sequence[str]
) -> tuple[Workload, ...]:
    """Load and validate every file; raise one WorkloadError listing all problems."""
    workloads: list[Workload] = []
    issues: list[Located] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            workload = load_workload(path, migration_ids)
        except WorkloadError as exc:
            issues.extend(exc.issues)
            continue
        for name in (*workload.queries, *workload.scenarios):
            if name in seen:
                issues.append(
                    Issue(workload.path, None, f"{name!r} is also defined in {seen[name]}")
                )
            seen[name] = workload.path
        workloads.append(workload)
    if issues:
        raise WorkloadError(issues)
    return tuple(workloads)


def load_workload(path: str | Path, migration_ids: Sequence[str]) -> Workload:
    """Load one workload file; raise WorkloadError with every problem found."""
    shown = str(path)
    text = read_text_file(Path(path), "workload file", "TOML")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = decode_error_line(message)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise WorkloadError([Issue(shown, line, f"invalid TOML: {message}")]) from None
    lines = TomlLines(text)
    try:
        spec = WorkloadSpec.model_validate(document)
    except ValidationError as exc:
        raise WorkloadError(
            [
                Issue(shown, lines.line_of(tuple(err["loc"])), _pydantic_message(err))
                for err in exc.errors()
            ]
        ) from None
    return _check(spec, Path(path), lines, migration_ids)


def _pydantic_message(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if error["type"] == "missing":
        return f"missing required key {where!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _check(
    spec: WorkloadSpec, path: Path, lines: TomlLines, migration_ids: Sequence[str]
) -> Workload:
    shown = str(path)
    issues: list[Issue] = []

    def problem(where: tuple[str | int, ...], message: str) -> None:
        issues.append(Issue(shown, lines.line_of(where), message))

    order = {mid: i for i, mid in enumerate(migration_ids)}

    def known(where: tuple[str | int, ...], owner: str, migration: str) -> bool:
        if migration not in order:
            listed = ", ".join(migration_ids) or "none"
            problem(where, f"{owner}: unknown migration {migration!r} (known: {listed})")
        return migration in order

    def source_variants(name: str, spec: ParamSpec) -> tuple[SourceVariant, ...]:
        found = [
            SourceVariant(v.from_migration, v.source)
            for i, v in enumerate(spec.variants)
            if known(("params", name, "variants", i, "from"), f"parameter {name!r}",
                     v.from_migration)
        ]  # fmt: skip
        return tuple(sorted(found, key=lambda v: order[v.from_migration]))

    params = {
        name: Parameter(
            name=name,
            provides=tuple(p.provides or [name]),
            source=p.source,
            values=tuple(p.values)
            if p.values is not None
            else (p.value,)
            if p.value is not None
            else None,
            span=(p.range[0], p.range[1]) if p.range is not None else None,
            distribution=p.distribution,
            skew=p.skew,
            pool=p.pool,
            path=shown,
            line=lines.line_of(("params", name)),
            variants=source_variants(name, p),
        )
        for name, p in spec.params.items()
    }
    provided: dict[str, str] = {}
    for param in params.values():
        for name in param.provides:
            if name in provided:
                problem(("params", param.name), f"parameter {name!r} is provided twice")
            provided[name] = param.name
    used: set[str] = set()
    queries: dict[str, Query] = {}
    for name, q in spec.queries.items():
        if not _NAME.match(name):
            problem(("queries", name), f"invalid query name {name!r}")
        base = parse_sql(q.sql, lines.value_line(("queries", name, "sql")))
        parsed = [
            parse_sql(v.sql, lines.value_line(("queries", name, "variants", i, "sql")))
            for i, v in enumerate(q.variants)
        ]
        variants = []
        located: list[tuple[SqlText, tuple[str | int, ...], str | None]] = [
            (base, ("queries", name, "sql"), None),
            *[(parsed[i], ("queries", name, "variants", i, "sql"), v.from_migration)
              for i, v in enumerate(q.variants)],
        ]  # fmt: skip
        for sql, where, variant in located:
            if (syntax := _syntax_error(sql)) is not None:
                which = statement_label(name, variant)
                issues.append(Issue(shown, sql.line_at(syntax[1]), f"{which}: {syntax[0]}"))
            for used_name in sql.params:
                used.add(used_name)
                if used_name not in provided:
                    problem(
                        where,
                        f"query {name!r} uses :{used_name}, which no [params] entry provides",
                    )
        for i, v in enumerate(q.variants):
            if known(("queries", name, "variants", i, "from"), f"query {name!r}",
                     v.from_migration):  # fmt: skip
                variants.append(Variant(v.from_migration, parsed[i]))
        variants.sort(key=lambda v: order[v.from_migration])
        if q.app is not None and (message := _callable_problem(q.app, path)):
            problem(("queries", name, "app"), message)
        queries[name] = Query(name, _workload_name(spec, path), shown, q.description, base,
                              q.target_ms, tuple(variants), q.app)  # fmt: skip
    for name, param in params.items():
        if not used.intersection(param.provides):
            problem(("params", name), f"parameter {name!r} is defined but no query uses it")
    scenarios: dict[str, Scenario] = {}
    for name, s in spec.scenarios.items():
        if name in spec.queries:
            problem(("scenarios", name), f"scenario {name!r} has the name of a query")
        for i, member in enumerate(s.queries):
            if member not in spec.queries:
                problem(("scenarios", name, "queries", i),
                        f"scenario {name!r} names unknown query {member!r}")  # fmt: skip
        if s.app is not None and (message := _callable_problem(s.app, path)):
            problem(("scenarios", name, "app"), message)
        scenarios[name] = Scenario(name, _workload_name(spec, path), shown, s.description,
                                   tuple(s.queries), s.target_ms, s.app)  # fmt: skip
    if not spec.queries:
        issues.append(Issue(shown, None, "defines no queries: nothing to measure"))
    if issues:
        raise WorkloadError(issues)
    return Workload(_workload_name(spec, path), shown, spec.workload.description, params,
                    queries, scenarios)  # fmt: skip


def statement_label(query: str, variant: str | None) -> str:
    """``query 'name'``, or ``query 'name' (variant from 0003_x)``, for messages."""
    return f"query {query!r}" + (f" (variant from {variant})" if variant else "")


def _syntax_error(sql: SqlText) -> tuple[str, int] | None:
    """PostgreSQL's own parser (pglast) on ``sql``: its syntax error and where, if any."""
    try:
        parser.parse_sql(sql.positional)
    except parser.ParseError as exc:
        message, offset = (*exc.args, 0)[:2]
        return f"syntax error: {message}", int(offset)
    return None


def _workload_name(spec: WorkloadSpec, path: Path) -> str:
    return spec.workload.name or path.stem


def _callable_problem(spec: str, path: Path) -> str | None:
    if not _CALLABLE.match(spec):
        return f"app {spec!r} is not a 'module:function' path"
    try:
        resolve_callable(spec, path)
    except VpbenchError as exc:
        return exc.message
    return None


def resolve_callable(spec: str, workload_path: str | Path) -> AppCallable:
    """Import ``module:function``; the workload file's folder is on the import path."""
    module_name, _, function_name = spec.partition(":")
    folder = str(Path(workload_path).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppCallableError(f"app {spec!r}: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AppCallableError(f"app {spec!r}: {module_name} has no function {function_name!r}")
    return function  # type: ignore[no-any-return]
