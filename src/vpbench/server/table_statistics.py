"""Row counts of a server's tables as its catalog estimates them, read without reading a row.

Only ``pg_class`` is read (``reltuples``, kept by VACUUM and ANALYZE), in a read-only
transaction: every role that can connect may run it, with no privilege on the tables, and
nothing on the server changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vpbench.errors import UsageError
from vpbench.server.target import open_connection, server_address

_ESTIMATES = """
SELECT n.nspname || '.' || c.relname, c.reltuples::float8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
"""


@dataclass(frozen=True)
class TableEstimates:
    """Rows per table (named as the runs named it) and the server they were read from."""

    rows: dict[str, float]
    server: str


def read_table_estimates(conninfo: str, tables: Iterable[str], source: str) -> TableEstimates:
    """The estimated rows of ``tables`` on the server ``conninfo`` names (``source``: the
    option that named it); a table missing there, or never analyzed, is refused by name."""
    with open_connection(conninfo, autocommit=True, source=source) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        found = {str(name): float(rows) for name, rows in conn.execute(_ESTIMATES)}
    server = server_address(conninfo)
    rows: dict[str, float] = {}
    for table in tables:
        # an unqualified name is in the search path of the runs that recorded it: public
        qualified = table if "." in table else f"public.{table}"
        if qualified not in found:
            raise UsageError(f"table {qualified} is not on {server} ({source})")
        if found[qualified] < 0:
            raise UsageError(f"table {table} on {server} was never analyzed: its row count is "
                             "unknown", hint="ANALYZE it there, or give --rows")  # fmt: skip
        rows[table] = found[qualified]
    return TableEstimates(rows, server)
