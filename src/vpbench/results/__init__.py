"""Results documents: versioned JSON written atomically, and pandas frames read from them."""

from vpbench.results.documents import load, read_document

__all__ = ["load", "read_document"]
