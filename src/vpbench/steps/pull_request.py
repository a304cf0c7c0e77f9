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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vpbench.analysis.comparison import Comparison, compare_sides, load_sides
from vpbench.analysis.verdicts import DEFAULT_THRESHOLD, Threshold
from vpbench.dataset.profiles import Profile
from vpbench.errors import UsageError
from vpbench.measure.ab import run_ab
from vpbench.measure.interleave import PairedOptions
from vpbench.reporting.markdown import REPORT, comparison_report
from vpbench.reporting.mermaid import comparison_charts
from vpbench.results.documents import results_folder
from vpbench.server.backup import copy_database
from vpbench.server.maintenance import run_checkpoint
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.copies import describe_copy
from vpbench.steps.final_state import apply_series
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
) -> PullRequestResult:
    """Measure the final states of ``base`` and ``head`` (None: the working tree) paired,
    both migrated from one seeded database (or one copy of ``start_from``)."""
    tell = say or (lambda message: None)
    with results_folder(out_dir):
        refs = (base, head or "working tree")
        labels = (f"base {_short(refs[0])}", f"head {_short(refs[1])}")
        with tempfile.TemporaryDirectory(prefix="vpbench-pr-") as scratch:
            trees = (
                export_tree(repo, base, Path(scratch) / "base", layout),
                repo if head is None else export_tree(repo, head, Path(scratch) / "head", layout),
            )
            workloads = sorted((trees[1] / layout.workloads).glob("*.toml"))
            if not workloads:
                raise UsageError(f"no workload files in {layout.workloads}/ of the head")
            start_database(target, databases[0], profile=profile, seed=seed, start_from=start_from,
                           say=tell, run="ci pr")  # fmt: skip
            copy = copy_database(target, databases[0], databases[1])
            tell(f"copied it to {databases[1]} ({describe_copy(copy)})")
            for tree, name, label in zip(trees, databases, ("base", "head"), strict=True):
                tell(f"{label}: applying its migrations to {name}")
                apply_series(target, name, tree / layout.migrations)
            with connect(target, autocommit=True) as conn:
                run_checkpoint(conn)  # both states' pages written now, not while timing
            tell("measuring base and head pair by pair in one session")
            outcome = run_ab(target, databases[0], databases[1], workloads, options,
                             out_dir=out_dir, migrations_dir=trees[1] / layout.migrations,
                             label="pr", side_labels=labels)  # fmt: skip
        before, after, _ = load_sides([outcome.path])
        comparison = compare_sides(before, after, paired_session=True, threshold=threshold)
        report = comparison_report(comparison, out_dir / "report")
        comment = out_dir / COMMENT
        comment.write_text(pull_request_comment(comparison, report), encoding="utf-8")
        return PullRequestResult(comparison, outcome.path, report, comment, refs)


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


def pull_request_comment(comparison: Comparison, report: Path) -> str:
    """The comment: marker, verdicts, Mermaid charts, the report's tables (its PNG images,
    which a comment cannot show, are left to the run's artifact)."""
    text = report.read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not line.startswith("![")]
    failure = comparison.failure("regression")
    lines = [
        MARKER,
        f"## vpbench: {comparison.new.label} against {comparison.base.label} "
        "(final states of the migration series, measured paired)",
        "",
        "**Regression: " + failure + "**" if failure else "No regression.",
        "",
        comparison_charts(comparison),
        "",
        *kept,
        "",
        f"PNG charts and the measurement document: the run's `vpbench` artifact ({REPORT} "
        "with before-after.png and distribution.png).",
        "",
    ]
    return "\n".join(lines)
