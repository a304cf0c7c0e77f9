"""vpbench: measure every PostgreSQL schema step of the video page, safely."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vpbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
