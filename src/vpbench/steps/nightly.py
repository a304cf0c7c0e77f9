"""``vpbench ci nightly``: tonight's head measured paired against the last night that passed.

The night that passed is rebuilt the way ``ci pr`` rebuilds a base: its commit's migrations
(``git archive``) on a copy of the same seeded data, settled alike, and both final states
measured pair by pair in one session with tonight's workloads. So every nightly verdict is
a paired one, with its interval and the smallest change it could see, whatever the machine
did between the nights; and a chain of nights (each judged against its base) gives the
ratio from any night to any later one. The first night is measured against itself: it
reads zero, and is the base of the next. A night measures what ``vpbench run`` measures,
the application-layer versions included, so that no entry's history stops when the nights
became paired.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vpbench.analysis.comparison import Comparison, compare_sides, load_sides
from vpbench.dataset.profiles import Profile
from vpbench.errors import ResultsFormatError
from vpbench.measure.ab import run_ab
from vpbench.measure.interleave import PairedOptions
from vpbench.measure.metadata import git_commit
from vpbench.reporting.markdown import comparison_report
from vpbench.reporting.trend import TrendResult, build_trend
from vpbench.results.documents import KIND_AB, history_documents, results_folder
from vpbench.server.backup import copy_database
from vpbench.server.maintenance import run_checkpoint
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget, connect
from vpbench.steps.final_state import apply_series
from vpbench.steps.pull_request import Layout, export_tree
from vpbench.steps.start import start_database

Say = Callable[[str], None]


@dataclass(frozen=True)
class StoredNight:
    """A night kept in the history: its document, the commit it measured, the night it was
    judged against (None: measured alone or against itself), whether it passed, and the
    paired ratio of each entry it judged (against that night)."""

    path: Path
    commit: str
    base: str | None
    passed: bool
    ratios: dict[str, float]

    @property
    def id(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class NightlyResult:
    night: Path
    base: StoredNight | None
    """the night tonight was judged against; None on the first night"""
    comparison: Comparison
    report: Path
    trend: TrendResult


def run_nightly(
    target: ServerTarget,
    dbname: str,
    *,
    repo: Path,
    layout: Layout,
    profile: Profile,
    seed: int,
    options: PairedOptions,
    history: Path,
    out_dir: Path,
    label: str,
    start_from: StartFrom | None = None,
    say: Say = lambda message: None,
) -> NightlyResult:
    """Tonight's head (the working tree of ``repo``) against the commit of the last night
    that passed, both rebuilt from the same data and measured paired; the night's document
    goes into ``history``."""
    head = git_commit(repo)
    if head is None:
        raise ResultsFormatError("not a git checkout: a nightly run is judged against the "
                                 "commit of the last night that passed", path=repo)  # fmt: skip
    with results_folder(out_dir):
        base = last_passed(history)
        base_commit = base.commit if base else head
        names = (f"{dbname}_base", dbname)
        workloads = sorted((repo / layout.workloads).glob("*.toml"))
        if not workloads:
            raise ResultsFormatError(f"no workload files in {layout.workloads}/", path=repo)
        with tempfile.TemporaryDirectory(prefix="vpbench-nightly-") as scratch:
            base_tree = export_tree(repo, base_commit, Path(scratch) / "base", layout)
            start_database(target, names[0], profile=profile, seed=seed, start_from=start_from,
                           say=say, run="ci nightly")  # fmt: skip
            copy_database(target, names[0], names[1])  # the same data on both sides
            which = f"night {base.id}" if base else "tonight's own: the first night"
            say(f"base: the migrations of {_short(base_commit)} ({which})")
            apply_series(target, names[0], base_tree / layout.migrations)
            say(f"tonight: the migrations of {_short(head)}")
            head_series = repo / layout.migrations
            apply_series(target, names[1], head_series)
            with connect(target, autocommit=True) as conn:
                run_checkpoint(conn)  # both states' pages written now, not while timing
            say("measuring the base and tonight pair by pair in one session")
            outcome = run_ab(
                target, names[0], names[1], workloads, replace(options, app_layer=True),
                out_dir=history,
                migrations_dir=head_series, label=label,
                side_labels=(f"night {base.id}" if base else f"{_short(head)} (itself)",
                             f"tonight {_short(head)}"),
                metadata={"git_commit": head,
                          "nightly": {"base_commit": base_commit,
                                      "base_night": base.id if base else None}},
            )  # fmt: skip
        before, after, _ = load_sides([outcome.path])
        comparison = compare_sides(before, after, paired_session=True)
        report = comparison_report(comparison, out_dir / "compare")
        trend = build_trend(history, out_dir / "trend")
        return NightlyResult(outcome.path, base, comparison, report, trend)


def stored_nights(history: Path) -> list[StoredNight]:
    """The nights in ``history``, oldest first (file names start with a UTC stamp); the
    documents that cannot be read are skipped (``vpbench publish`` names them)."""
    nights = []
    for path, document in history_documents(history)[0]:
        commit = str(document["metadata"].get("git_commit") or "")
        if document["kind"] != KIND_AB:  # a run: an unpaired night, as before
            if commit:
                nights.append(StoredNight(path, commit, None, True, {}))
            continue
        judged: dict[str, Any] = (document.get("verdicts") or {}).get("entries", {})
        ratios = {name: float(j["ratio"]) for name, j in judged.items()
                  if j.get("ratio") is not None and math.isfinite(float(j["ratio"]))}  # fmt: skip
        passed = not any(j.get("verdict") == "slower" for j in judged.values())
        base = document["metadata"]["nightly"].get("base_night")
        nights.append(StoredNight(path, commit, base, passed, ratios))
    return nights


def last_passed(history: Path) -> StoredNight | None:
    """The newest night without a regression: tonight's base."""
    return next((night for night in reversed(stored_nights(history)) if night.passed), None)


def chained_ratio(history: Path, entry: str, since: str, until: str) -> float | None:
    """``entry``'s ratio from night ``since`` to the later night ``until``: the product of
    the paired ratios along the chain of bases from ``until`` back to ``since``; None where
    the chain does not reach it or a link did not judge the entry."""
    nights = {night.id: night for night in stored_nights(history)}
    ratio, current = 1.0, nights.get(until)
    while current is not None and current.id != since:
        if current.base is None or entry not in current.ratios:
            return None
        ratio *= current.ratios[entry]
        current = nights.get(current.base)
    return ratio if current is not None else None


def _short(commit: str) -> str:
    return commit[:12]
