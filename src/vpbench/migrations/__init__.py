"""Migrations: the folder format, the ledger of applied steps, applying ``up`` and ``down``."""
