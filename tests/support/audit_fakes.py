"""An in-memory audit log for unit tests of the stages: it keeps every record body it is given."""

from __future__ import annotations

from typing import Any

__all__ = ["RecordingAuditLog"]


class RecordingAuditLog:
    """``AuditLog``'s two writing methods, keeping the bodies in ``bodies`` (oldest first)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def append(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)

    def append_nowait(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The bodies of ``kind`` (``decision`` or ``outcome``)."""
        return [body for body in self.bodies if body["kind"] == kind]
