"""``python -m vpbench``."""

from vpbench.cli import main

main()
