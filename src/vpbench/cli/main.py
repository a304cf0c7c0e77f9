"""The ``vpbench`` command: parse arguments, call one library function, render the result."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from vpbench import __version__
from vpbench.cli._common import configure_logging, err
from vpbench.cli.capture import capture, coverage_command
from vpbench.cli.ci import ci
from vpbench.cli.compare import ab, compare
from vpbench.cli.data import audit, seed
from vpbench.cli.db import db
from vpbench.cli.migrate import migrate
from vpbench.cli.predict import predict
from vpbench.cli.report import publish, report, trend
from vpbench.cli.run import run
from vpbench.cli.steps import steps
from vpbench.errors import BadInputError, CheckFailedError, InterruptError, VpbenchError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vpbench")
@click.option(
    "-v", "--verbose", count=True, help="Log what vpbench does to stderr (-vv: in detail)."
)
def cli(verbose: int) -> None:
    """Benchmark the learning app's PostgreSQL queries across measured schema migrations."""
    configure_logging(verbose)


cli.add_command(db)
cli.add_command(seed)
cli.add_command(audit)
cli.add_command(run)
cli.add_command(capture)
cli.add_command(coverage_command)
cli.add_command(migrate)
cli.add_command(steps)
cli.add_command(predict)
cli.add_command(compare)
cli.add_command(ab)
cli.add_command(report)
cli.add_command(trend)
cli.add_command(publish)
cli.add_command(ci)


log = logging.getLogger("vpbench")

EXIT_CODES: tuple[tuple[type[VpbenchError], int], ...] = (
    (InterruptError, 130),
    (BadInputError, 2),
    (VpbenchError, 1),
)
"""The one map from kinds of failure to exit statuses, first match wins: 2 for input vpbench
cannot use, 1 for a failure or a failed check (regression, breach, violation), 130 for
Ctrl-C; 0 when the command ran and found nothing wrong."""


INTERNAL_ERROR = 70
"""EX_SOFTWARE: vpbench itself failed on something it did not expect (a bug)"""


def exit_code(error: VpbenchError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def _usage_message(exc: click.ClickException) -> str:
    """Click's message with the command it is about and where its help is, on one line."""
    message = " ".join(exc.format_message().split())
    command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else None
    return f"{command}: {message} (see '{command} --help')" if command else message


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: expected failures become one line on stderr and an exit status."""
    try:
        cli.main(args=argv, prog_name="vpbench", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # click's own usage errors (status 2), in one line
        err.print(f"vpbench: error: {_usage_message(exc)}", highlight=False, markup=False,
                  soft_wrap=True)  # fmt: skip
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        err.print("vpbench: interrupted", highlight=False)
        sys.exit(130)
    except CheckFailedError as exc:
        err.print(f"vpbench: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exit_code(exc))
    except VpbenchError as exc:
        err.print(f"vpbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exit_code(exc))
    except Exception as exc:  # a slip through every expected failure: a bug, not the user's
        log.debug("internal error", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        err.print(f"vpbench: internal error: {type(exc).__name__}: {first} (a bug in vpbench; "
                  "rerun with -vv for the traceback)", highlight=False, markup=False,
                  soft_wrap=True)  # fmt: skip
        sys.exit(INTERNAL_ERROR)
    sys.exit(0)
