"""The observer at the runner's step: one place that sees every stage start, end and fail.

Metrics and traces attach here (an observer that counts and times stages, or
opens a span per stage) without a change in any stage. The runner calls
``stage_started`` before and ``stage_ended`` after every stage of every
request, GET streams and DELETEs included, and the runner's ``outcome`` step
at the end of every request (refused ones too); an observer must be cheap and
must never raise (the runner ignores what it raises, after logging it:
observing never changes a decision). ``combined`` tells several in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from bastion.errors import BastionError
from bastion.pipeline.context import Exchange

__all__ = ["NO_OBSERVER", "StepObserver", "combined"]

logger = logging.getLogger(__name__)


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


class _Observers:
    """Several observers told in turn; one that raises does not keep the others from being told."""

    def __init__(self, observers: Sequence[StepObserver]) -> None:
        self._observers = tuple(observers)

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        for observer in self._observers:
            try:
                observer.stage_started(exchange, stage)
            except Exception:
                logger.exception("a step observer failed; ignored")

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        for observer in self._observers:
            try:
                observer.stage_ended(exchange, stage, duration_s, error)
            except Exception:
                logger.exception("a step observer failed; ignored")


def combined(*observers: StepObserver) -> StepObserver:
    """One observer telling each of ``observers`` (metrics, traces) in order, skipping
    ``NO_OBSERVER``: ``NO_OBSERVER`` itself when none is left (the runner then calls nothing),
    the one observer when one is left."""
    kept = [observer for observer in observers if observer is not NO_OBSERVER]
    if not kept:
        return NO_OBSERVER
    return kept[0] if len(kept) == 1 else _Observers(kept)
