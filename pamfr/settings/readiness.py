"""What a readiness check says, as plain values: each part of a daemon (the MLLP listener, the
database, the parse workers, the webhook subscribers) gives a Check, and /readyz answers the
Readiness they make together. Here, in the bottom room, so that a room that reports a check
(feed/) and the one that serves it (http/) need not import the daemon (service/health.py
runs the checks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reason(self) -> str:
        """What is wrong, one clause per failed check ("" when ready)."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ready" if self.ready else "not ready"}
        if not self.ready:
            out["reason"] = self.reason
        out["checks"] = {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks}
        return out
