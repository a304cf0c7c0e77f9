"""A pull request's new migrations at production size: run again at a smaller profile, so
that ``predict`` has two sizes, and predicted at the rows given or read from a production
server's catalog."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vpbench.analysis.prediction import (
    ProductionSize,
    SeriesPrediction,
    predict_series,
    read_series_run,
    series_tables,
)
from vpbench.dataset.profiles import PROFILES, Profile
from vpbench.migrations.sources import ReadSeries
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import ServerTarget
from vpbench.steps.final_state import apply_series
from vpbench.steps.model import StepsOptions
from vpbench.steps.pipeline import run_steps
from vpbench.steps.start import start_database

SMALLER = {"small": "tiny", "medium": "small", "large": "small"}
"""the second size a profile's new migrations are run at"""


@dataclass(frozen=True)
class SecondSize:
    """How the new migrations are run at a smaller size: the databases, their series."""

    target: ServerTarget
    databases: tuple[str, str]
    base: ReadSeries
    head: ReadSeries
    workloads: Sequence[Path]
    options: StepsOptions


def predict_new_migrations(
    size: SecondSize,
    profile: Profile,
    seed: int,
    measured: Path,
    production: ProductionSize,
    out_dir: Path,
    tell: Callable[[str], None],
) -> SeriesPrediction:
    """The new migrations (their steps results in ``measured``) run again from the base's
    final state at the profile below ``profile``, and both runs fitted and predicted at
    ``production``."""
    smaller = PROFILES[SMALLER[profile.name]]
    tell(f"prediction: the base at profile {smaller.name}, then the new migrations through "
         "steps there too")  # fmt: skip
    start_database(size.target, size.databases[0], profile=smaller, seed=seed, say=tell,
                   run="ci pr")  # fmt: skip
    apply_series(size.target, size.databases[0], size.base)
    run_steps(size.target, size.databases[1], profile=smaller, seed=seed,
              workload_paths=size.workloads, migrations_dir=size.head, out_dir=out_dir,
              options=size.options, on_event=tell,
              start_from=StartFrom(database=size.databases[0]))  # fmt: skip
    runs = [read_series_run(out_dir), read_series_run(measured)]
    rows, source = production.read(series_tables(runs))
    return predict_series(runs, rows, source)
