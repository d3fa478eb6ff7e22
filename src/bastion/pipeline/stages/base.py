"""The shape of a stage."""

from __future__ import annotations

from typing import Protocol

from bastion.pipeline.context import Exchange

__all__ = ["Stage"]


class Stage(Protocol):
    """One step of the request path.

    ``name`` is recorded in logs and in the audit record of a deny raised
    inside the stage. ``run`` enriches the exchange, or ends the request by
    setting ``exchange.reply`` or raising a ``BastionError`` (the runner turns
    any exception into a deny).
    """

    name: str

    async def run(self, exchange: Exchange) -> None:
        """Process ``exchange``; see the class docstring."""
        ...
