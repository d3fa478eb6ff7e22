"""A clock the tests move by hand, for code that takes a ``clock`` (a callable returning seconds)."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """``clock()`` is the time (seconds: epoch or monotonic, as the code under test reads it), ``now``
    where it stands; ``clock.advance(s)`` (or ``clock.now += s``) moves it on."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
