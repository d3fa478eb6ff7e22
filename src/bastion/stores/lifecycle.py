"""The lifecycle every store shares: ``start`` opens it, ``close`` releases it, or ``async with``.

A backend that holds resources (connections, a writer thread, a pool) acquires them in
``start`` and releases them in ``close``; ``close`` is idempotent. A backend with nothing
to open (an in-memory one, or one that opened a local file when it was built) makes
``start`` a no-op.
"""

from __future__ import annotations

from typing import Protocol, Self

__all__ = ["Lifecycle"]


class Lifecycle(Protocol):
    """``start`` before use, ``close`` after; or ``async with store: ...``."""

    async def start(self) -> None:
        """Open the store. Raises the backend's error (``OSError``, a driver error) when it cannot."""
        ...

    async def close(self) -> None:
        """Release what the store holds (idempotent)."""
        ...

    async def __aenter__(self) -> Self:
        """``start`` and return the store."""
        ...

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        ...
