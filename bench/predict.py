"""``vpbench predict`` proven on a larger size: the reference series run at small sizes, its
costs predicted at a larger one, then measured there.

    python bench/predict.py [--fit tiny,small,medium] [--against large] [--out DIR] [--at-rest]

Runs ``steps --profile P`` for each profile (on the server ``VPBENCH_DSN`` names, else the
embedded one; a profile whose folder already holds a summary is reused), with the paired
rounds cut to the minimum: a prediction reads what ``up`` cost, not the query latencies.
Then predicts every step's figures at the sizes of the ``--against`` run and prints, per
step and figure, what was measured at each size, the prediction with its 95 % interval,
the value measured there and the error. ``--at-rest`` skips the live-traffic rehearsal of
every ``up`` (no stall figures; the durations and lock holds are those of the ``up`` at
rest), which makes ``large`` affordable: under traffic its ``up``s take several times
longer. The goal: every step's duration and longest lock
hold inside its interval and within ±35 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vpbench.analysis.prediction import FigurePrediction, predict_series, read_series_run
from vpbench.reporting.prediction_report import predicted_text, value_text

LEAN = ["--rounds", "2", "--min-rounds", "2", "--max-rounds", "2", "--repeat", "1",
        "--budget", "1s", "--no-report"]  # fmt: skip
GOAL = 0.35


def run_profile(profile: str, out: Path, extra: list[str]) -> float | None:
    """``steps --profile`` into ``out`` with ``extra`` options (None: reused); its wall seconds."""
    if (out / "summary.json").is_file():
        return None
    env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    began = time.perf_counter()
    command = [sys.executable, "-m", "vpbench", "steps", "--profile", profile,
               "--db", f"bench_predict_{profile}", "--out", str(out), *LEAN, *extra]  # fmt: skip
    with (out.parent / f"{profile}.log").open("w") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode not in (0, 1):
        sys.exit(f"steps --profile {profile} failed (exit {done.returncode}): see {log.name}")
    return time.perf_counter() - began


def _inside(found: FigurePrediction) -> bool:
    return (found.predicted is not None and found.measured is not None
            and found.predicted.contains(found.measured))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", default="tiny,small,medium")
    parser.add_argument("--against", default="large")
    parser.add_argument("--out", type=Path, default=Path("results/bench-predict"))
    parser.add_argument("--at-rest", action="store_true", help="no live-traffic rehearsals")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    profiles = [*options.fit.split(","), options.against]
    for profile in profiles:
        extra = ["--no-traffic"] if options.at_rest else []
        seconds = run_profile(profile, options.out / profile, extra)
        print(f"{profile}: " + ("reused" if seconds is None else f"{seconds:.0f} s"), flush=True)
    fitted = [read_series_run(options.out / p) for p in options.fit.split(",")]
    measured = read_series_run(options.out / options.against)
    prediction = predict_series(fitted, {}, f"the sizes of {options.against}", measured=measured)
    rows: list[dict[str, Any]] = []
    for step in prediction.steps:
        print(f"\n{step.migration} ({step.rows:,.0f} rows touched)")
        for found in step.figures:
            inside = _inside(found)
            measured_there = "" if found.measured is None else value_text(found, found.measured)
            error = "" if found.error is None else f"{found.error:+.0%}"
            print(f"  {found.label:42} {predicted_text(found):28} measured {measured_there:10} "
                  f"{error:6} {'inside' if inside else 'OUTSIDE'}")  # fmt: skip
            rows.append({"step": step.migration, "figure": found.label, "key": found.key,
                         "points": [[p.rows, p.value] for p in found.points],
                         "predicted": None if found.predicted is None else
                         [found.predicted.value, found.predicted.low, found.predicted.high],
                         "model": found.predicted.model if found.predicted else None,
                         "measured": found.measured, "error": found.error,
                         "inside": inside})  # fmt: skip
    figures = [f for step in prediction.steps for f in step.figures]
    judged = [f for f in figures if f.key == "duration" or f.key.startswith("lock ")]
    goal = [f for f in judged if _inside(f) and f.error is not None and abs(f.error) <= GOAL]
    print(f"\nduration and lock holds: {len(goal)} of {len(judged)} inside their interval and "
          f"within ±{GOAL:.0%}; all figures: {sum(map(_inside, figures))} of {len(figures)} "
          "inside their interval")  # fmt: skip
    (options.out / "errors.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
