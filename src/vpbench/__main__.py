"""``python -m vpbench``."""

from vpbench.cli.main import main

main()
