"""Equal shared buffers for the two sides of a paired session.

Two databases on one server compete for its shared buffers. A table larger than a quarter
of them is scanned through a small ring of buffers, but pages leak out of the ring into the
main pool (a buffer dirtied by a hint bit cannot be reused before its WAL is flushed), so
each copy's share of resident pages grows, and unequally: measured on ``small`` (123 MB of
quiz attempts, 128 MB of shared buffers), two fresh copies of one database went from 0 to
~8,000 resident pages each over five sessions, and the one with ~900 more pages (6% of the
table) scanned it 5.5% faster — a "faster" verdict between identical databases. The
residency moves slowly, so rounds within one session share it and the interval over rounds
cannot see it.

On a server vpbench owns (the embedded one, PostgreSQL 18) every paired round therefore
starts from empty shared buffers (``pg_buffercache_evict_all()``); both sides then fill them
alike within the round. Other servers are left alone: emptying a shared server's buffers
would slow everyone else's queries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from vpbench.server.target import EMBEDDED, ServerTarget, open_connection

log = logging.getLogger(__name__)

EVICT_ALL_SINCE = 180000
"""``pg_buffercache_evict_all()`` arrived in PostgreSQL 18"""


@contextmanager
def buffer_evictor(target: ServerTarget) -> Iterator[Callable[[], None] | None]:
    """A function that empties the server's shared buffers, for as long as the context
    lasts; None when the server is not vpbench's own or cannot do it."""
    if target.source != EMBEDDED:
        yield None
        return
    with open_connection(target.conninfo, autocommit=True, source=target.source) as conn:
        if conn.info.server_version < EVICT_ALL_SINCE:
            yield None
            return
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        except psycopg.Error as exc:
            log.info("cannot empty shared buffers between rounds: %s", exc)
            yield None
            return

        def evict() -> None:
            conn.execute("SELECT pg_buffercache_evict_all()")

        yield evict
