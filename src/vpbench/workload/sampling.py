"""Parameter samplers: load each pool once, then draw reproducible values per run seed.

A source query's first ``pool`` rows form the pool, in the query's order; ``zipf`` makes
earlier rows more likely (weight 1/rank^skew), so a source ordered by activity gives the
skew real traffic has. Every query or scenario draws from its own seeded stream.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from vpbench.errors import SamplerError
from vpbench.migrations.ledger import applied_migrations
from vpbench.server.target import untracked
from vpbench.workload.spec import Parameter, Workload

SOURCE_TIMEOUT = "10min"
"""how long a parameter source may run (whatever statement_timeout the session has)"""


@dataclass(frozen=True)
class ParameterPool:
    """The values one sampler draws from, one tuple per row (a value per provided name)."""

    parameter: Parameter
    rows: tuple[tuple[Any, ...], ...]
    cdf: npt.NDArray[np.float64] | None
    """cumulative weights for a skewed pool; None for a uniform one"""

    @property
    def size(self) -> int:
        span = self.parameter.span
        return span[1] - span[0] + 1 if span else len(self.rows)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        # A uniform pick needs no search, and a range no rows: searching or touching a
        # million-entry pool between timed executions evicts enough of the client's cache
        # to slow the next execution by 3-5 us (bench/overhead.py).
        share = rng.random()
        if self.cdf is None:
            index = int(share * self.size)
        else:
            index = int(np.searchsorted(self.cdf, share, side="right"))
        index = min(index, self.size - 1)
        if self.parameter.span:
            return {self.parameter.provides[0]: self.parameter.span[0] + index}
        return dict(zip(self.parameter.provides, self.rows[index], strict=True))


def _plain(value: Any) -> Any:
    # A uuid.UUID would be sent typed as uuid and fail against the legacy text columns;
    # a str is sent untyped and PostgreSQL infers the column's type.
    return str(value) if isinstance(value, uuid.UUID) else value


def load_parameter_pool(
    conn: psycopg.Connection[Any], parameter: Parameter, applied: Collection[str] = ()
) -> ParameterPool:
    """Run the parameter's source in force once ``applied`` migrations ran (or take its
    values) and build the sampling pool."""
    where = f"{parameter.path}:{parameter.line}" if parameter.line else parameter.path
    source = parameter.source_for(applied)
    if parameter.span is not None:
        rows: list[tuple[Any, ...]] = []
    elif source is None:
        rows = [(v,) for v in parameter.values or ()]
    else:
        try:
            # A source is setup, not a measurement: the measured statements' timeout (10 s)
            # would cut short an aggregate over a large table (10M attempts: ~20 s).
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = '{SOURCE_TIMEOUT}'")
                untracked(conn)
                cursor = conn.execute(source)
                fetched = cursor.fetchmany(parameter.pool)
        except psycopg.Error as exc:
            raise SamplerError(
                f"{where}: parameter source {parameter.name!r} failed: "
                f"{str(exc).strip().splitlines()[0]}",
                sqlstate=exc.sqlstate,
            ) from None
        columns = tuple(c.name for c in cursor.description or ())
        rows = [tuple(_plain(v) for v in row) for row in fetched]
        if len(parameter.provides) > 1 and columns[: len(parameter.provides)] != parameter.provides:
            raise SamplerError(
                f"{where}: parameter source {parameter.name!r} returns columns "
                f"({', '.join(columns)}), expected ({', '.join(parameter.provides)})"
            )
        rows = [row[: len(parameter.provides)] for row in rows]
        if not rows:
            raise SamplerError(
                f"{where}: parameter source {parameter.name!r} returned no rows",
                hint="is the database seeded? (vpbench seed)",
            )
    pool = ParameterPool(parameter, tuple(rows), None)
    if parameter.distribution != "zipf":
        return pool
    weights = np.arange(1, pool.size + 1, dtype=np.float64) ** -parameter.skew
    cdf = np.cumsum(weights)
    return ParameterPool(parameter, tuple(rows), cdf / cdf[-1])


def load_parameter_pools(
    conn: psycopg.Connection[Any], workload: Workload
) -> dict[str, ParameterPool]:
    """Every sampler of ``workload``, keyed by the parameter names each provides; a source
    follows the schema of the database (the variant of the migrations in its ledger)."""
    applied = applied_migrations(conn)
    pools: dict[str, ParameterPool] = {}
    for parameter in workload.params.values():
        pool = load_parameter_pool(conn, parameter, applied)
        for name in parameter.provides:
            pools[name] = pool
    return pools


def load_workload_pools(
    conn: psycopg.Connection[Any], workloads: Sequence[Workload]
) -> dict[str, dict[str, ParameterPool]]:
    """``load_parameter_pools`` of each workload, keyed by the workload's name."""
    return {workload.name: load_parameter_pools(conn, workload) for workload in workloads}


class ParameterStream:
    """Reproducible parameter sets for one query or scenario: same seed, same sequence."""

    def __init__(
        self, pools: dict[str, ParameterPool], needed: Iterable[str], seed: int, stream: str
    ) -> None:
        groups = {id(pools[name]): pools[name] for name in needed}
        self._pools = [
            groups[key] for key in sorted(groups, key=lambda k: groups[k].parameter.name)
        ]
        self._rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])

    def draw(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for pool in self._pools:
            values.update(pool.draw(self._rng))
        return values
