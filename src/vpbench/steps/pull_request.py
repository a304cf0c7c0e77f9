"""``vpbench ci pr``: a migration pull request judged paired.

The legacy database is seeded once and copied (a clone where the server can), the base
commit's and the head's migrations are applied one to each, both are settled alike, and the
final states are
measured against each other in one interleaved session (``vpbench ab``) with the head's
workloads (each state runs the variants its migrations bring). The comment for the pull
request holds the verdicts and charts GitHub draws itself (Mermaid); the PNG report sits
beside it.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from vpbench.analysis.comparison import Comparison, compare_sides, load_sides
from vpbench.analysis.prediction import ProductionSize, SeriesPrediction
from vpbench.analysis.verdicts import DEFAULT_THRESHOLD, Threshold
from vpbench.dataset.profiles import Profile
from vpbench.errors import MigrationError, UsageError, VpbenchError
from vpbench.measure.ab import run_ab
from vpbench.measure.interleave import PairedOptions
from vpbench.migrations.changes import SeriesChanges, series_changes
from vpbench.migrations.sources import ReadSeries, discover_migrations
from vpbench.reporting.markdown import REPORT, build_report, comparison_report
from vpbench.reporting.mermaid import comparison_charts
from vpbench.results.documents import results_folder
from vpbench.server.backup import copy_database
from vpbench.server.maintenance import run_checkpoint
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.copies import describe_copy
from vpbench.steps.final_state import apply_series
from vpbench.steps.model import StepReport, StepsOptions
from vpbench.steps.pipeline import run_steps
from vpbench.steps.pr_migrations import (
    MIGRATION_CHECKS,
    MigrationFailure,
    migration_failures,
    migration_timeline,
    migrations_table,
    prediction_section,
)
from vpbench.steps.pr_prediction import SMALLER, SecondSize, predict_new_migrations
from vpbench.steps.start import start_database

COMMENT = "comment.md"
MARKER = "<!-- vpbench-report -->"
"""the first line of the comment: how a later push finds the comment to update"""

Say = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """Where a repository keeps what vpbench reads, relative to its root."""

    migrations: str = "fixtures/migrations"
    workloads: str = "workloads"


@dataclass(frozen=True)
class PullRequestResult:
    comparison: Comparison
    ab_path: Path
    report: Path
    comment: Path
    refs: tuple[str, str]
    changes: SeriesChanges
    steps: tuple[StepReport, ...] = ()
    """the new migrations, each through the steps pipeline from the base's final state"""
    prediction: SeriesPrediction | None = None
    """the new migrations at production size (when one was given)"""
    prediction_note: str = ""
    """why there is no prediction although a production size was given"""

    @property
    def migration_failures(self) -> tuple[MigrationFailure, ...]:
        return migration_failures(self.steps, self.prediction)


def judge_pull_request(
    target: ServerTarget,
    repo: Path,
    base: str,
    head: str | None,
    *,
    profile: Profile,
    seed: int,
    options: PairedOptions,
    out_dir: Path,
    layout: Layout = Layout(),
    databases: tuple[str, str] = ("vpbench_pr_base", "vpbench_pr_head"),
    threshold: Threshold = DEFAULT_THRESHOLD,
    say: Say | None = None,
    start_from: StartFrom | None = None,
    production: ProductionSize | None = None,
) -> PullRequestResult:
    """The migrations ``head`` (None: the working tree) adds to ``base``, each run through
    the steps pipeline from the base's final state (seeded, or a copy of ``start_from``),
    then the final states of both measured paired; with ``production``, the new migrations
    run again at a smaller profile and are predicted at that size."""
    tell = say or (lambda message: None)
    with results_folder(out_dir), ExitStack() as stack:
        refs = (base, head or "working tree")
        labels = (f"base {_short(refs[0])}", f"head {_short(refs[1])}")
        with tempfile.TemporaryDirectory(prefix="vpbench-pr-") as scratch:
            trees = (
                export_tree(repo, base, Path(scratch) / "base", layout),
                repo if head is None else export_tree(repo, head, Path(scratch) / "head", layout),
            )
            exported = {tree: ref for tree, ref in zip(trees, refs, strict=True) if tree != repo}
            stack.enter_context(_named_in_repo(exported))
            workloads = sorted((trees[1] / layout.workloads).glob("*.toml"))
            if not workloads:
                raise UsageError(f"no workload files in {layout.workloads}/ of the head")
            changes = series_changes(
                discover_migrations(trees[0] / layout.migrations),
                discover_migrations(trees[1] / layout.migrations),
            )
            for finding in _history_findings(changes):
                tell(finding)
            start_database(target, databases[0], profile=profile, seed=seed, start_from=start_from,
                           say=tell, run="ci pr")  # fmt: skip
            tell(f"base: applying its migrations to {databases[0]}")
            apply_series(
                target, databases[0], ReadSeries(changes.base, trees[0] / layout.migrations)
            )
            head_series = ReadSeries(changes.series, trees[1] / layout.migrations)
            steps_options = StepsOptions(paired=options, threshold=threshold)
            try:
                steps = _head_state(target, databases, head_series, changes, workloads,
                                    steps_options, (profile, seed), out_dir / "steps",
                                    tell)  # fmt: skip
            except MigrationError as exc:
                _name_in_repo(exc, exported)
                (out_dir / COMMENT).write_text(_failed_comment(exc, changes, refs),
                                               encoding="utf-8")  # fmt: skip
                raise
            second = SecondSize(
                target, (f"{databases[0]}_size", f"{databases[1]}_size"),
                ReadSeries(changes.base, trees[0] / layout.migrations), head_series, workloads,
                steps_options,
            )  # fmt: skip
            prediction, note = _at_production_size(production, steps, second, (profile, seed),
                                                   start_from, out_dir, tell)  # fmt: skip
            with connect(target, autocommit=True) as conn:
                run_checkpoint(conn)  # both states' pages written now, not while timing
            tell("measuring base and head pair by pair in one session")
            outcome = run_ab(target, databases[0], databases[1], workloads, options,
                             out_dir=out_dir, migrations_dir=head_series,
                             label="pr", side_labels=labels)  # fmt: skip
        before, after, _ = load_sides([outcome.path])
        comparison = compare_sides(before, after, paired_session=True, threshold=threshold)
        report = comparison_report(comparison, out_dir / "report")
        if steps:  # the new migrations' own report: tables, timelines under traffic as PNG
            build_report([out_dir / "steps"], out_dir / "steps" / "report", threshold=threshold)
        result = PullRequestResult(comparison, outcome.path, report, out_dir / COMMENT, refs,
                                   changes, steps, prediction, note)  # fmt: skip
        result.comment.write_text(pull_request_comment(result), encoding="utf-8")
        return result


def _head_state(
    target: ServerTarget,
    databases: tuple[str, str],
    series: ReadSeries,
    changes: SeriesChanges,
    workloads: list[Path],
    options: StepsOptions,
    data: tuple[Profile, int],
    out_dir: Path,
    tell: Say,
) -> tuple[StepReport, ...]:
    """The head's final state in ``databases[1]``: the base's final state (``databases[0]``)
    with each new migration run through the steps pipeline; their reports. (``data``, the
    profile and seed the base was seeded with, for the steps summary.)"""
    if not changes.new:
        copy = copy_database(target, databases[0], databases[1])
        tell(f"head adds no migration: copied the base to {databases[1]} ({describe_copy(copy)})")
        return ()
    tell(f"head: {len(changes.new)} new migration(s), each through steps from the base's final "
         "state")  # fmt: skip
    done = run_steps(target, databases[1], profile=data[0], seed=data[1], workload_paths=workloads,
                     migrations_dir=series, out_dir=out_dir, options=options, on_event=tell,
                     start_from=StartFrom(database=databases[0]))  # fmt: skip
    return done.steps


def _failed_comment(exc: MigrationError, changes: SeriesChanges, refs: tuple[str, str]) -> str:
    """The comment when a new migration could not be applied: which, and the server's
    error; nothing else was measured."""
    lines = [
        MARKER,
        f"## vpbench: head {_short(refs[1])} against base {_short(refs[0])}",
        "",
        f"**A new migration failed to apply: {exc}**",
        "",
        "Nothing else was measured. New migrations: "
        + ", ".join(f"`{m.id}`" for m in changes.new)
        + ".",
        "",
    ]
    history = _history_findings(changes)
    lines += ["**History:**", "", *[f"- {finding}" for finding in history], ""] if history else []
    return "\n".join(lines)


def _at_production_size(
    production: ProductionSize | None,
    steps: tuple[StepReport, ...],
    second: SecondSize,
    data: tuple[Profile, int],
    start_from: StartFrom | None,
    out_dir: Path,
    tell: Say,
) -> tuple[SeriesPrediction | None, str]:
    """The new migrations predicted at ``production`` (when given), from their run in
    ``out_dir/steps`` and one more at a smaller profile; else why not."""
    if production is None or not steps:
        return None, ""
    if note := _why_no_prediction(data[0], start_from):
        return None, note
    prediction = predict_new_migrations(second, data[0], data[1], out_dir / "steps", production,
                                        out_dir / "steps-smaller", tell)  # fmt: skip
    return prediction, ""


def _why_no_prediction(profile: Profile, start_from: StartFrom | None) -> str:
    if start_from is not None:
        return (
            f"the new migrations ran on one size ({start_from.describe()}); a prediction "
            "needs two: use `vpbench predict` with runs of your copies at two sizes"
        )
    if profile.name not in SMALLER:
        return f"profile {profile.name} has no smaller one to fit with: use small or larger"
    return ""


def pull_request_failures(result: PullRequestResult, fail_on: frozenset[str]) -> list[str]:
    """What ``--fail-on`` (regression, target, any, the migration checks, migrations: all of
    them, none) finds failing, one message each."""
    checks = set(fail_on) - {"none"}
    if "migrations" in checks:
        checks |= set(MIGRATION_CHECKS)
    found = [f.describe() for f in result.migration_failures if f.check in checks]
    final = "any" if "any" in checks or {"regression", "target"} <= checks else next(
        (c for c in ("regression", "target") if c in checks), None)  # fmt: skip
    if final and (failure := result.comparison.failure(final)):
        found.append(f"head against base: {failure}")
    return found


def _history_findings(changes: SeriesChanges) -> list[str]:
    """What the head does to migrations a database that ran the base already has."""
    found = [f"edited history: {edited.describe()}" for edited in changes.edited]
    found += [f"removed: {m.id} is in the base, not in the head" for m in changes.removed]
    found += [f"out of order: {m.id} is new, but comes before migrations the base has"
              for m in changes.out_of_order]  # fmt: skip
    return found


@contextmanager
def _named_in_repo(trees: dict[Path, str]) -> Iterator[None]:
    """An error in a file of an exported tree names it as ``REF:path`` in the repository,
    not in the scratch folder that is gone once ``ci pr`` ends."""
    try:
        yield
    except VpbenchError as exc:
        _name_in_repo(exc, trees)
        raise


def _name_in_repo(exc: VpbenchError, trees: dict[Path, str]) -> None:
    for tree, ref in trees.items():
        if exc.path is not None and Path(exc.path).is_relative_to(tree):
            exc.path = f"{_short(ref)}:{Path(exc.path).relative_to(tree)}"


def _short(ref: str) -> str:
    """A commit id as git shows it short; branch names and "working tree" as they are."""
    is_sha = len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)
    return ref[:12] if is_sha else ref


def export_tree(repo: Path, ref: str, into: Path, layout: Layout) -> Path:
    """The migrations and workloads of ``ref`` (``git archive``), extracted into ``into``."""
    paths = [layout.migrations, layout.workloads]
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", ref, "--", *paths],
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError(f"cannot read {ref!r}: git is not on PATH (ci pr reads the base and "
                         "head with git archive)") from None  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise UsageError(f"cannot read {', '.join(paths)} at {ref!r} in {repo}: {reason}")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        try:
            archive.extractall(into, filter="data")  # refuses absolute and escaping paths
        except tarfile.FilterError as exc:
            raise UsageError(f"unsafe path in {ref!r}: {exc}") from None
    return into


def pull_request_comment(result: PullRequestResult) -> str:
    """The comment: marker, the verdict, the new migrations (worst facts first, details
    collapsed), the history findings, then the final states' verdicts, Mermaid charts and
    tables (the report's PNG images, which a comment cannot show, are left to the run's
    artifact)."""
    comparison = result.comparison
    text = result.report.read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not line.startswith("![")]
    failures = [f.describe() for f in result.migration_failures]
    regression = comparison.failure("regression")
    verdict = failures + ([f"final states: {regression}"] if regression else [])
    lines = [
        MARKER,
        f"## vpbench: {comparison.new.label} against {comparison.base.label}",
        "",
        ("**" + "; ".join(verdict) + "**")
        if verdict
        else "Every new migration passed; no regression.",
        "",
    ]
    lines += _migrations_section(result)
    lines += [
        "### Final states of the migration series, measured paired",
        "",
        comparison_charts(comparison),
        "",
        *kept,
        "",
        f"PNG charts and the measurement documents: the run's `vpbench` artifact ({REPORT} "
        "with before-after.png and distribution.png; the new migrations' step documents in "
        f"steps/, and their {REPORT} in steps/report/ with a timeline of each under live "
        "traffic).",
        "",
    ]
    return "\n".join(lines)


def _migrations_section(result: PullRequestResult) -> list[str]:
    history = _history_findings(result.changes)
    lines = ["### New migrations", ""]
    if not result.steps:
        lines += ["This pull request adds no migration: only the final states are compared.", ""]
    else:
        lines += [
            f"{len(result.steps)} new migration(s), each run through `vpbench steps` from the "
            "base's final state: applied at rest, rehearsed under live traffic, audited, "
            "measured before/after, checked with the deployed app and reverted.",
            "",
            *migrations_table(result.steps),
            "",
            *[migration_timeline(step) for step in result.steps],
            "",
        ]
    if history:
        lines += ["**History:**", "", *[f"- {finding}" for finding in history], ""]
    if result.prediction is not None:
        lines += prediction_section(result.prediction)
    elif result.prediction_note:
        lines += [f"No prediction at production size: {result.prediction_note}.", ""]
    return lines
