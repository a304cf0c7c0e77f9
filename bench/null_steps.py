"""The null test at scale: a series of migrations that change nothing, through ``steps``.

    python bench/null_steps.py [--profile small] [--steps 10] [--dsn DSN]

Every step is ``SELECT 1;`` up and down, measured with the reference workloads' queries
and video page (their legacy SQL: variants name the reference migrations, which this
series does not have). Each step judges 11 entries, so 10 steps give 110 judgements.
A calibrated instrument reads zero: at most 1% of judgements moved each way (faster,
slower), no index bytes, the same write figures, the same plans, and summary answers
that say "no change". The figures printed are the counts, with the minimum detectable
effect the steps reached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from vpbench.dataset.fixtures import default_workload_paths
from vpbench.dataset.profiles import get_profile
from vpbench.server.target import resolve_target
from vpbench.steps.model import StepsOptions
from vpbench.steps.pipeline import run_steps
from vpbench.steps.summary import index_bytes_added

DATABASE = "vpbench_bench_null"


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return f"'''\n{value}'''" if "\n" in value else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def legacy_workload(source: Path, folder: Path) -> Path:
    """The workload file with its variants and app-layer versions left out."""
    document = tomllib.loads(source.read_text(encoding="utf-8"))
    lines: list[str] = []
    for table, entries in document.items():
        if table == "workload":
            lines += ["[workload]"] + [f"{k} = {_toml_value(v)}" for k, v in entries.items()]
            continue
        for name, fields in entries.items():
            lines.append(f"\n[{table}.{name}]")
            lines += [
                f"{key} = {_toml_value(value)}"
                for key, value in fields.items()
                if key not in ("variants", "app")
            ]
    path = folder / source.name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def noop_series(folder: Path, count: int) -> Path:
    for number in range(1, count + 1):
        step = folder / f"{number:04d}_noop"
        step.mkdir(parents=True)
        (step / "up.sql").write_text("SELECT 1;\n")
        (step / "down.sql").write_text("SELECT 1;\n")
        (step / "migration.toml").write_text(f'title = "no-op {number}"\n')
    return folder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dsn")
    args = parser.parse_args(argv)

    target = resolve_target(args.dsn)
    options = StepsOptions()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        workloads = [legacy_workload(p, folder) for p in default_workload_paths()]
        began = time.perf_counter()
        result = run_steps(
            target,
            DATABASE,
            profile=get_profile(args.profile),
            seed=1,
            workload_paths=workloads,
            migrations_dir=noop_series(folder / "migrations", args.steps),
            out_dir=folder / "out",
            options=options,
        )
        seconds = time.perf_counter() - began
        answers = json.loads(result.summary_path.read_text())["answers"]
    verdicts: list[str] = []
    mdes: list[float] = []
    same_plans = same_writes = 0
    for step in result.steps:
        for before, after in zip(step.before, step.after, strict=True):
            judgement = step.verdicts.entries[after.name]
            verdicts.append(judgement.verdict)
            mdes.append(judgement.mde)
            same_plans += {k: v.fingerprint for k, v in before.plan_summaries.items()} == {
                k: v.fingerprint for k, v in after.plan_summaries.items()
            }
        same_writes += sum(w.before is not None and w.before == w.after for w in step.writes)
    total, writes = len(verdicts), sum(len(s.writes) for s in result.steps)
    counts = {v: verdicts.count(v) for v in ("faster", "slower", "unchanged", "inconclusive")}
    print(f"server {target.describe(DATABASE)} ({target.source}); profile {args.profile}; "
          f"{len(result.steps)} no-op steps in {seconds:.0f}s; "
          f"threshold {options.threshold}")  # fmt: skip
    print(f"judgements: {total}; moved faster {counts['faster']}/{total} = "
          f"{counts['faster'] / total:.1%}, slower {counts['slower']}/{total} = "
          f"{counts['slower'] / total:.1%} (target <= 1% each way); unchanged "
          f"{counts['unchanged']}, inconclusive {counts['inconclusive']}")  # fmt: skip
    print(f"minimum detectable effect: median {statistics.median(mdes):.1%}, worst "
          f"{max(mdes):.1%}; rounds per step {[s.rounds for s in result.steps]}")  # fmt: skip
    print(f"deterministic: index bytes added {[index_bytes_added(s) for s in result.steps]}; "
          f"plans identical {same_plans}/{total}; write figures identical "
          f"{same_writes}/{writes}")  # fmt: skip
    for question, answer in answers.items():
        print(f"{question.replace('_', ' ')}: {answer}")
    return {"counts": counts, "total": total, "same_writes": same_writes, "writes": writes}


if __name__ == "__main__":
    main()
