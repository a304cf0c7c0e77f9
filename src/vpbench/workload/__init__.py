"""Workload files: queries, scenarios and app-layer versions, and the samplers that draw
their parameters."""
