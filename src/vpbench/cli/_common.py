"""What the CLI modules share: consoles, common options, parameter types, printing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn
from rich.table import Table

from vpbench.errors import UsageError
from vpbench.migrations.sources import LAYOUTS, MigrationsLocation, MigrationSource
from vpbench.server.source_copy import StartFrom
from vpbench.server.target import DEFAULT_DATABASE, resolve_target

if TYPE_CHECKING:
    from vpbench.analysis.verdicts import Threshold
    from vpbench.measure.interleave import PairedOptions
    from vpbench.migrations.locking import LockPolicy
    from vpbench.server.target import ServerTarget

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000}
WIDE_TABLE = 150
"""Columns for wide tables when stdout is not a terminal (CI logs, pipes)."""


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        metavar="DSN",
        help="PostgreSQL server to use (default: VPBENCH_DSN, DATABASE_URL, PG* variables, "
        "else the embedded server).",
    )(func)


def count_option(
    name: str, default: int, *, minimum: int, help: str, dest: str | None = None
) -> Callable[[F], F]:
    """An integer option with a lower bound and its default shown in --help."""
    declarations = [name] if dest is None else [name, dest]
    return click.option(
        *declarations,
        default=default,
        show_default=True,
        type=click.IntRange(min=minimum),
        help=help,
    )


FAIL_ON = ("regression", "target", "any")
"""what ``--fail-on`` may name: see ``Comparison.failure``"""


def fail_on_option(help: str, *, never: bool = False) -> Callable[[F], F]:
    """``--fail-on regression|target|any`` (and ``none`` when ``never``), default regression."""
    return click.option(
        "--fail-on",
        type=click.Choice((*FAIL_ON, "none") if never else FAIL_ON),
        default="regression",
        show_default=True,
        help=help,
    )


def out_dir_option(default: str | None, help: str | None = None) -> Callable[[F], F]:
    """``--out DIR``: the folder a command writes into."""
    return click.option(
        "--out",
        "out_dir",
        default=default,
        show_default=default is not None,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


def profile_options(default: str) -> Callable[[F], F]:
    """``--profile`` (the scale profile to seed) and ``--seed``."""
    from vpbench.dataset.profiles import PROFILES

    def decorate(func: F) -> F:
        func = click.option("--seed", "seed_value", default=1, show_default=True)(func)
        return click.option(
            "--profile", default=default, show_default=True, metavar="|".join(PROFILES)
        )(func)

    return decorate


def workload_files_option(func: F) -> F:
    """``--workload FILE`` (repeatable) of a command that seeds and migrates."""
    return click.option(
        "--workload",
        "workload_paths",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Workload file (repeatable; default: the reference workloads).",
    )(func)


def no_report_option(func: F) -> F:
    return click.option(
        "--no-report",
        is_flag=True,
        help="Do not write report.md and its charts next to the results.",
    )(func)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "dbname",
        help="Database vpbench works in (created and marked as vpbench's if missing); "
        f"default: the one the DSN names, else {DEFAULT_DATABASE}.",
    )(func)


def resolve_database(dsn: str | None, dbname: str | None) -> tuple[ServerTarget, str]:
    """The server (``--dsn`` and the documented fallbacks) and the database a command
    works in (``--db``, else the DSN's, else ``vpbench``)."""
    target = resolve_target(dsn)
    return target, target.database(dbname)


def start_from_options(func: F) -> F:
    """``--from DB_OR_DSN`` / ``--from-dump FILE``: a team's own data instead of a profile."""
    func = click.option(
        "--from-dump",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Start from a restore of this pg_dump -Fc file instead of seeding.",
    )(func)
    return click.option(
        "--from",
        "from_database",
        metavar="DB_OR_DSN",
        help="Start from a copy of this database (a name on the server, or a DSN) instead of "
        "seeding: it is only read, and no session on it is ended.",
    )(func)


def start_from(from_database: str | None, from_dump: Path | None) -> StartFrom | None:
    """What ``--from``/``--from-dump`` ask for (None: seed the profile)."""
    if from_database and from_dump:
        raise UsageError("give --from or --from-dump, not both")
    return StartFrom(from_database, from_dump) if from_database or from_dump else None


def checks_option(func: F) -> F:
    """``--checks FILE``: a team's own integrity checks (TOML)."""
    return click.option(
        "--checks",
        "checks_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A checks file (TOML: [checks.NAME] sql = a count of violating rows, examples = "
        "their ids) run beside the built-in checks on every state.",
    )(func)


def _remember_layout(ctx: click.Context, param: click.Parameter, value: str) -> None:
    ctx.meta["migrations_layout"] = value


def _migrations_source(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> MigrationsLocation | None:
    layout = ctx.meta.get("migrations_layout", "auto")
    if value is None:
        if layout != "auto":
            raise click.BadParameter("names the layout of --migrations, which is not given",
                                     param_hint="--migrations-layout")  # fmt: skip
        return None
    return MigrationSource(value, layout)


def _migrations_options(help_text: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func = click.option(
            "--migrations",
            "migrations_dir",
            type=click.Path(exists=True, path_type=Path),
            callback=_migrations_source,
            help=help_text,
        )(func)
        return click.option(
            "--migrations-layout",
            type=click.Choice(LAYOUTS),
            default="auto",
            show_default=True,
            is_eager=True,
            expose_value=False,
            callback=_remember_layout,
            help="How --migrations is laid out: vpbench folders, an alembic project, numbered "
            "SQL pairs (NNNN_name.up.sql/.down.sql); auto finds it.",
        )(func)

    return decorate


migrations_option = _migrations_options(
    "Migrations: a vpbench folder, an alembic project (its alembic.ini or folder) or a folder "
    "of numbered SQL pairs (default: the reference series in fixtures/migrations)."
)
variant_migrations_option = _migrations_options(
    "Migrations whose ids variants name (default: the reference series)."
)
"""``--migrations`` of a command that only reads workloads: the ids variants name"""


class Duration(click.ParamType[Any, int]):
    """``500ms``, ``5s``, ``2m`` or a bare number of seconds, as milliseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        unit = next((u for u in ("ms", "s", "m") if text.endswith(u)), "")
        try:
            amount = float(text.removesuffix(unit) if unit else text)
        except ValueError:
            self.fail(f"{value!r} is not a duration such as 500ms, 5s or 2m", param, ctx)
        milliseconds = int(amount * DURATION_UNITS[unit or "s"])
        if milliseconds <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return milliseconds


_COUNT = re.compile(r"^(-?\d+(?:\.\d+)?(?:e\d+)?)([kKmMgG]?)$")
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


class TableRows(click.ParamType[Any, tuple[str, float]]):
    """``TABLE=N``: ``quiz_attempts=50000000``, ``=50M``, ``=5e7``."""

    name = "table=rows"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        table, sep, count = str(value).partition("=")
        match = _COUNT.match(count.strip().replace("_", "").replace(",", ""))
        if not sep or not table.strip() or match is None:
            self.fail(f"{value!r} is not TABLE=ROWS such as quiz_attempts=50M", param, ctx)
        rows = float(match[1]) * _SUFFIX[match[2].lower()]
        if rows < 1:
            self.fail(f"{value!r}: a table's rows must be at least 1", param, ctx)
        return table.strip(), rows


def parse_threshold(ctx: click.Context, param: click.Parameter, value: str | None) -> Threshold:
    """``--threshold STAT:PCT``: the smallest change a verdict is given for."""
    from vpbench.analysis.verdicts import DEFAULT_THRESHOLD, Threshold

    return Threshold.parse(value) if value else DEFAULT_THRESHOLD


def configure_logging(verbosity: int) -> None:
    """Send vpbench's log records to stderr: warnings, ``-v`` info, ``-vv`` debug."""
    from rich.logging import RichHandler

    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger("vpbench")
    logger.handlers[:] = [RichHandler(console=err, show_path=verbosity > 1, markup=False)]
    logger.setLevel(level)
    logger.propagate = False


def threshold_option(func: F) -> F:
    return click.option(
        "--threshold",
        callback=parse_threshold,
        metavar="STAT:PCT",
        help="Smallest change that counts, e.g. median:5% (default) or p95:10%.",
    )(func)


def lock_options(func: F) -> F:
    """--lock-timeout and --lock-attempts of applying migrations."""
    from vpbench.migrations.locking import LockPolicy

    default = LockPolicy()
    func = count_option(
        "--lock-attempts",
        default.attempts,
        minimum=1,
        help="Tries of a step that timed out waiting for a lock.",
        dest="lock_attempts",
    )(func)
    return click.option(
        "--lock-timeout",
        "lock_timeout_ms",
        default=f"{default.timeout_ms}ms",
        show_default=True,
        type=Duration(),
        help="lock_timeout of every migration statement (at most half the stall budget "
        "under live traffic); a timeout retries after a pause.",
    )(func)


def lock_policy(lock_timeout_ms: int, lock_attempts: int) -> LockPolicy:
    """The LockPolicy that ``lock_options`` describe."""
    from vpbench.migrations.locking import LockPolicy

    return LockPolicy(timeout_ms=lock_timeout_ms, attempts=lock_attempts)


def paired_options(budget: str) -> Callable[[F], F]:
    """--rounds, --min-rounds, --max-rounds, --repeat and --budget (default ``budget``) of a
    paired session."""
    decorators = [
        count_option(
            "--rounds", 10, minimum=2, help="Paired rounds every entry gets within the budget."
        ),
        count_option(
            "--min-rounds",
            3,
            minimum=2,
            help="Paired rounds every entry gets however long they take.",
        ),
        count_option(
            "--max-rounds", 30, minimum=2, help="Rounds an imprecise entry may get at most."
        ),
        count_option("--repeat", 3, minimum=1, help="Pairs per entry and round."),
        click.option(
            "--budget",
            "budget_ms",
            default=budget,
            show_default=True,
            type=Duration(),
            help="No round starts after this much measuring, once every entry had --min-rounds.",
        ),
    ]

    def decorate(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return decorate


def _given(*names: str) -> bool:
    """Whether the user gave every one of these options (not their defaults)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and all(
        ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE for name in names
    )


def paired_session(
    rounds: int, min_rounds: int, max_rounds: int, repeat: int, budget_ms: int, seed: int
) -> PairedOptions:
    """The PairedOptions that ``paired_options`` and ``--seed`` describe (``--rounds`` is
    brought within ``--min-rounds``..``--max-rounds``; those two, when both given, must
    not contradict)."""
    from vpbench.measure.interleave import PairedOptions

    if min_rounds > max_rounds and _given("min_rounds", "max_rounds"):
        raise UsageError(f"--min-rounds {min_rounds} is more than --max-rounds {max_rounds}")

    return PairedOptions(
        rounds=rounds,
        min_rounds=min(min_rounds, rounds),
        max_rounds=max(rounds, max_rounds),
        repeat=repeat,
        seed=seed,
        budget_seconds=budget_ms / 1000,
    )


def wide(table: Table) -> None:
    """Print a wide table at full width even when stdout is not a terminal."""
    (out if out.is_terminal else Console(width=WIDE_TABLE)).print(table)


@contextmanager
def progress_bars(banner: str) -> Iterator[Callable[[str, int, int], None]]:
    """A bar per table, shown from the first progress report on (so a refusal before any
    work prints nothing but its error)."""
    tasks: dict[str, TaskID] = {}
    progress = Progress(
        "[progress.description]{task.description:<14}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )

    def update(table: str, done: int, total: int) -> None:
        if not tasks:
            err.print(banner, highlight=False)
            progress.start()
        if table not in tasks:
            tasks[table] = progress.add_task(escape(table), total=total)  # "name[app]"
        progress.update(tasks[table], completed=done)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()
