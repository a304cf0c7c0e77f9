"""Timing workloads: prepared statements like ``pgbench -M prepared``, EXPLAIN (ANALYZE,
BUFFERS) and plan summaries, run metadata, interleaved paired sessions and write cost."""
