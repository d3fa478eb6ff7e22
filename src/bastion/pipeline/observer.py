"""The observer at the runner's step: one place that sees every stage start, end and fail.

Metrics and traces attach here (an observer that counts and times stages, or
opens a span per stage) without a change in any stage. The runner calls
``stage_started`` before and ``stage_ended`` after every stage of every
request, GET streams and DELETEs included; an observer must be cheap and must
never raise (the runner ignores what it raises, after logging it: observing
never changes a decision).
"""

from __future__ import annotations

from typing import Protocol

from bastion.errors import BastionError
from bastion.pipeline.context import Exchange

__all__ = ["NO_OBSERVER", "StepObserver"]


class StepObserver(Protocol):
    """Told of each stage's start and end.

    ``duration_s`` is the stage's wall-clock time in seconds (``time.perf_counter``);
    ``error`` is the ``BastionError`` the stage ended the request with (its ``code``
    is the audit code), ``None`` when it let the request go on or set a reply.
    """

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        """A stage is about to run."""
        ...

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        """A stage has run."""
        ...


class _NoObserver:
    def stage_started(self, exchange: Exchange, stage: str) -> None:
        pass

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        pass


NO_OBSERVER: StepObserver = _NoObserver()
"""The default: observes nothing."""
