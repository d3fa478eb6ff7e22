"""A fake ASGI ``send`` channel shared by the transport unit tests."""

from __future__ import annotations

import json
from typing import Any


class Sink:
    """Collects the ASGI messages an app sends; reads back status, headers and body."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def json(self) -> Any:
        return json.loads(self.body)
