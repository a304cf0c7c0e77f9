"""What a reviewer of a migration pull request asks of each new migration: how long it runs,
which lock it holds for how long, what it does to the live app and to the deployed app,
whether it reverts, what it costs; and which of the checks ``ci pr --fail-on`` names fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vpbench.analysis.prediction import SeriesPrediction
from vpbench.migrations.touched import LOCK_STRENGTH, blocks_the_app, lock_mode, lock_relation
from vpbench.reporting.mermaid import timeline_chart
from vpbench.reporting.prediction_report import predicted_text, verdict_text
from vpbench.reporting.units import duration, elapsed, human_bytes
from vpbench.steps.model import StepReport
from vpbench.steps.summary import index_bytes_added

MIGRATION_CHECKS = ("budget", "old-app", "reversible", "integrity")
"""what ``ci pr --fail-on`` may name of a new migration (``migrations``: all four)"""


@dataclass(frozen=True)
class MigrationFailure:
    migration: str
    check: str
    why: str

    def describe(self) -> str:
        return f"{self.migration} fails {self.check}: {self.why}"


def migration_failures(
    steps: Sequence[StepReport], prediction: SeriesPrediction | None = None
) -> tuple[MigrationFailure, ...]:
    """Every migration check each step fails, in the series' order; a step predicted over
    its stall budget at production size fails ``budget`` too."""
    found: list[MigrationFailure] = []
    predicted = {p.migration: p for p in prediction.steps} if prediction else {}
    for step in steps:
        name = step.migration.id
        if (at_size := predicted.get(name)) is not None and at_size.verdict == "over":
            found.append(MigrationFailure(name, "budget", "at production size: "
                                          + verdict_text(at_size)))  # fmt: skip
        if (availability := step.availability) is not None and not availability.passed:
            worst = availability.worst
            why = availability.failure or (
                f"the app waited {worst.ms / 1000:.1f} s for its locks, over its "
                f"{duration(availability.budget_ms)} budget"
                if worst
                else "over its budget"
            )
            found.append(MigrationFailure(name, "budget", why))
        if step.old_app.undeclared:
            breaks = "; ".join(step.old_app.old_app_breaks) or step.old_app.deploy_order
            found.append(MigrationFailure(name, "old-app", f"breaks the deployed app ({breaks}) "
                                          "and its migration.toml does not say why"))  # fmt: skip
        if not step.reversible:
            found.append(MigrationFailure(name, "reversible", "not reversible: "
                                          + "; ".join(step.reversibility_problems)))  # fmt: skip
        problems = _integrity_problems(step)
        if problems:
            found.append(MigrationFailure(name, "integrity", "; ".join(problems)))
    return tuple(found)


def _integrity_problems(step: StepReport) -> list[str]:
    problems = []
    if not step.data_intact:
        lost = {
            t: n - step.rows_after.get(t, 0) - step.quarantined.get(t, 0)
            for t, n in step.rows_before.items()
        }
        problems.append("rows lost: " + ", ".join(f"{t} {n:,}" for t, n in lost.items() if n))
    before, after = step.audit_before.total_violations, step.audit_after.total_violations
    if after > before:
        problems.append(f"integrity violations {before:,} → {after:,}")
    problems += [f"results changed: {change}" for change in step.unexpected_changes]
    return problems


def strongest_lock(step: StepReport) -> tuple[str, float] | None:
    """The strongest lock ``up`` held at rest on a table it touched, and its longest hold in
    seconds."""
    holds = [h for h in step.lock_holds if lock_relation(h.lock) in step.touched]
    if not holds:
        return None
    top = max(holds, key=lambda h: (LOCK_STRENGTH.index(h.lock.partition(" on ")[0]),
                                    h.until_s - h.from_s))  # fmt: skip
    return f"{lock_mode(top.lock)} on {lock_relation(top.lock)}", top.until_s - top.from_s


def migrations_table(steps: Sequence[StepReport]) -> list[str]:
    """One Markdown row per new migration: its facts, the failing ones in bold."""
    lines = [
        "| migration | duration | strongest lock | app blocked (reads / writes) | app slowed, "
        "p99 (reads / writes) | failed requests | old app | reversible | index size | WAL per "
        "inserted row |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        lock = strongest_lock(step)
        lines.append("| " + " | ".join([
            f"`{step.migration.id}`",
            elapsed(step.up_seconds),
            f"{lock[0]}, {elapsed(lock[1])}" if lock else "none on a table",
            _blocked_cell(step),
            _slowed_cell(step),
            str(sum(step.availability.failed.values())) if step.availability else "",
            step.old_app.deploy_advice if not step.old_app.undeclared
            else f"**{step.old_app.deploy_advice}**",
            "yes" if step.reversible else "**no**",
            human_bytes(index_bytes_added(step), signed=True),
            "<br>".join(_wal_cell(step)),
        ]) + " |")  # fmt: skip
    return lines


def migration_timeline(step: StepReport) -> str:
    """``up`` at rest as a Gantt chart GitHub draws: its statements, and the locks it held
    that the app waits for, collapsed under the migration's name."""
    statements = [(f"line {run.line} {run.text}", run.started_s, run.started_s + run.seconds)
                  for run in step.statements]  # fmt: skip
    locks = [
        (f"{lock_mode(h.lock)} {lock_relation(h.lock)}", h.from_s, h.until_s)
        for h in step.lock_holds
        if lock_relation(h.lock) in step.touched and blocks_the_app(h.lock)
    ]
    sections = {"statements": statements, "locks the app waits for": locks}
    chart = timeline_chart(f"{step.migration.id} up at rest", sections)
    return "\n".join([f"<details><summary>timeline of {step.migration.id}</summary>", "",
                      chart, "", "</details>"])  # fmt: skip


def _blocked_cell(step: StepReport) -> str:
    found = step.availability
    if found is None:
        return "not rehearsed"
    read, write = (duration(ms) if ms else "none" for ms in found.blocked_ms.values())
    text = f"{read} / {write} (budget {duration(found.budget_ms)})"
    return text if found.passed else f"**{text}**"


def _slowed_cell(step: StepReport) -> str:
    """How much slower the app's unblocked requests ran meanwhile (reported, not judged:
    the machine is shared with the migration)."""
    if step.availability is None:
        return ""
    ratios = [step.availability.slowed[kind].ratio for kind in ("read", "write")]
    return " / ".join("" if r is None else f"{r:.2f}x" for r in ratios)


def _wal_cell(step: StepReport) -> list[str]:
    return [
        f"{w.table}: {human_bytes(w.before.wal_bytes)} → {human_bytes(w.after.wal_bytes)}"
        for w in step.writes
        if w.before is not None and w.after is not None
    ]


def prediction_section(prediction: SeriesPrediction) -> list[str]:
    """The new migrations at production size: each one's verdict, then its longest predicted
    downtime and duration, in a table."""
    lines = [f"### At production size ({prediction.production})", ""]
    lines += [f"- {verdict_text(step)}" for step in prediction.steps]
    lines += ["", "| migration | duration at rest | longest lock or stall the app waits for |",
              "|---|---|---|"]  # fmt: skip
    for step in prediction.steps:
        at_rest = next((f for f in step.figures if f.key == "duration"), None)
        worst = step.worst
        cells = [
            f"`{step.migration}`",
            predicted_text(at_rest) if at_rest else "",
            f"{worst.label}: {predicted_text(worst)}" if worst else "none",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Fitted on two sizes of the data (the profile and the one below it); "
              "intervals are 95 % for one run at that size. `vpbench predict` gives every "
              "figure, with a chart.", ""]  # fmt: skip
    return lines
