"""What an integrity audit found: per check, how many rows are wrong and which."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: how many rows violate it and a sample of them."""

    name: str
    description: str
    applicable: bool
    violations: int
    examples: tuple[str, ...]
    note: str = ""
    group: str = "reference"
    """``reference`` (the learning app's own checks), ``generic`` (any schema, from the
    catalog) or ``yours`` (a checks file's)"""


@dataclass(frozen=True)
class AuditReport:
    """Every check's result, in a fixed order."""

    checks: tuple[CheckResult, ...]
    rows: dict[str, int] = field(default_factory=dict)
    """rows per table of the database's own schemas, where the audit counted them"""

    @property
    def total_violations(self) -> int:
        """Rows that break a data check (the reference schema's, or a checks file's)."""
        return sum(c.violations for c in self.checks if c.group != "generic")

    @property
    def schema_findings(self) -> int:
        """Objects the generic checks flag (a NOT VALID constraint, an unindexed foreign
        key, ...): the schema's hygiene, kept apart from rows that are wrong."""
        return self.violations_of("generic")

    def failing_violations(self) -> int:
        """What ``--fail-on-violations`` judges: the violations of your checks where the
        audit ran some (``--checks``), else those of every data check."""
        if any(c.group == "yours" for c in self.checks):
            return self.violations_of("yours")
        return self.total_violations

    def violations_of(self, group: str) -> int:
        """Violations found by the checks of ``group``."""
        return sum(c.violations for c in self.checks if c.group == group)

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no audit check named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_violations": self.total_violations,
            "schema_findings": self.schema_findings,
            "rows": self.rows,
            "checks": [
                {
                    "name": c.name,
                    "description": c.description,
                    "applicable": c.applicable,
                    "violations": c.violations,
                    "examples": list(c.examples),
                    "note": c.note,
                    "group": c.group,
                }
                for c in self.checks
            ],
        }
