"""What an integrity audit found: per check, how many rows are wrong and which."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class AuditReport:
    """Every check's result, in a fixed order."""

    checks: tuple[CheckResult, ...]

    @property
    def total_violations(self) -> int:
        return sum(c.violations for c in self.checks)

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no audit check named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_violations": self.total_violations,
            "checks": [
                {
                    "name": c.name,
                    "description": c.description,
                    "applicable": c.applicable,
                    "violations": c.violations,
                    "examples": list(c.examples),
                    "note": c.note,
                }
                for c in self.checks
            ],
        }
