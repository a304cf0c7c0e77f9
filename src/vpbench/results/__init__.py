"""Results documents: versioned JSON written atomically, and pandas frames read from them."""

from vpbench.results.documents import read_document
from vpbench.results.frames import load

__all__ = ["load", "read_document"]
