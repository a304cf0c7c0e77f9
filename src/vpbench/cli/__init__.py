"""The ``vpbench`` command: a thin shell over the library, one module per command group."""

from vpbench.cli.main import cli, main

__all__ = ["cli", "main"]
