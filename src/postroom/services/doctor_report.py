"""What `postroom doctor` reports: one `Check` per finding, with its status and fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: `check` is the kind (mx, spf, dkim, ...), `subject` what was looked at
    (a domain, an address, a selector's record), `fix` the one thing to do ("" when ok)."""

    check: str
    subject: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def name(self) -> str:
        return f"{self.check} {self.subject}" if self.subject else self.check

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "check": self.check,
            "subject": self.subject,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }


def worst(checks: Sequence[Check]) -> Status:
    """fail if any failed, else warn if any warned, else ok."""
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"
