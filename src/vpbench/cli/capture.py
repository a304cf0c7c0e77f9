"""``vpbench capture`` and ``vpbench coverage``: the server's real traffic, from
pg_stat_statements, as a workload file and as a check of the workload files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
from rich.table import Table

from vpbench.cli._common import (
    count_option,
    db_option,
    dsn_option,
    out,
    resolve_database,
    variant_migrations_option,
    wide,
)
from vpbench.errors import CheckFailedError, UsageError
from vpbench.measure.run import known_migration_ids
from vpbench.migrations.sources import MigrationsLocation
from vpbench.workload.capture import Capture, capture_workload
from vpbench.workload.coverage import Coverage, coverage
from vpbench.workload.spec import load_workload, load_workloads
from vpbench.workload.statements import read_statements

STATEMENT_SHOWN = 70


@click.command()
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Workload file to write (TOML).",
)
@count_option("--top", 20, minimum=1, help="Statements to consider, most total time first.")
@count_option("--min-calls", 2, minimum=1, help="Leave out statements called fewer times.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@db_option
@dsn_option
def capture(
    out_path: Path, top: int, min_calls: int, force: bool, dbname: str | None, dsn: str | None
) -> None:
    """Write a workload file of the server's top statements from pg_stat_statements."""
    if out_path.exists() and not force:
        raise UsageError(f"{out_path} exists", hint="pass --force to replace it")
    target, dbname = resolve_database(dsn, dbname)
    captured = capture_workload(target, dbname, top=top, min_calls=min_calls)
    if not captured.queries:
        raise CheckFailedError(
            f"no read statement with at least {min_calls} calls in pg_stat_statements for "
            f"{captured.statements.where}: let the app run first"
        )
    _write_checked(out_path, captured.to_toml())
    wide(_capture_table(captured))
    out.print(
        f"wrote {out_path}: {len(captured.queries)} queries, {captured.share:.1%} of the "
        "execution time of the application statements",
        highlight=False,
    )


@click.command("coverage")
@click.argument(
    "workloads",
    nargs=-1,
    required=True,
    metavar="WORKLOAD...",
    type=click.Path(dir_okay=False, path_type=Path),
)
@count_option("--top", 20, minimum=1, help="Server statements to list, most total time first.")
@click.option(
    "--fail-under",
    type=click.FloatRange(0, 100),
    help="Exit 1 when the workloads cover less than this percentage of execution time.",
)
@variant_migrations_option
@db_option
@dsn_option
def coverage_command(
    workloads: tuple[Path, ...],
    top: int,
    fail_under: float | None,
    migrations_dir: MigrationsLocation | None,
    dbname: str | None,
    dsn: str | None,
) -> None:
    """Which of the server's top statements the workload files measure."""
    loaded = load_workloads(workloads, known_migration_ids(migrations_dir))
    target, dbname = resolve_database(dsn, dbname)
    found = coverage(read_statements(target, dbname), loaded, top=top)
    wide(_coverage_table(found))
    out.print(
        f"covered: {found.covered_share:.1%} of the execution time of "
        f"{len(found.statements.statements)} application statements; uncovered "
        f"{found.uncovered_share:.1%}",
        highlight=False,
    )
    if fail_under is not None and 100 * found.covered_share < fail_under:
        raise CheckFailedError(
            f"the workloads cover {found.covered_share:.1%} of the execution time, "
            f"under --fail-under {fail_under:g}%"
        )


def _write_checked(path: Path, text: str) -> None:
    """Write ``text`` atomically, after checking it is a valid workload file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".toml")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        load_workload(staging, ())
        Path(staging).replace(path)
    finally:
        Path(staging).unlink(missing_ok=True)


def _capture_table(captured: Capture) -> Table:
    table = Table(title=f"captured from pg_stat_statements on {captured.statements.where}")
    for column, justify in (("query", "left"), ("share", "right"), ("calls", "right"),
                            ("mean ms", "right"), ("statement", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for query in captured.queries:
        s = query.statement
        table.add_row(query.name, f"{captured.statements.share([s]):.1%}", f"{s.calls:,}",
                      f"{s.mean_ms:.2f}", s.one_line(STATEMENT_SHOWN))  # fmt: skip
    for statement, why in captured.left_out:
        table.add_row("[dim]left out[/]", f"{captured.statements.share([statement]):.1%}",
                      f"{statement.calls:,}", f"{statement.mean_ms:.2f}",
                      f"[dim]{statement.one_line(STATEMENT_SHOWN)}: {why}[/]")  # fmt: skip
    return table


def _coverage_table(found: Coverage) -> Table:
    table = Table(title=f"top statements on {found.statements.where}")
    for column, justify in (("#", "right"), ("share", "right"), ("calls", "right"),
                            ("mean ms", "right"), ("covered by", "left"),
                            ("statement", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for rank, row in enumerate(found.top, start=1):
        s = row.statement
        covered = ", ".join(row.covered_by) if row.covered_by else "[red]not covered[/]"
        table.add_row(str(rank), f"{row.share:.1%}", f"{s.calls:,}", f"{s.mean_ms:.2f}",
                      covered, s.one_line(STATEMENT_SHOWN))  # fmt: skip
    return table
