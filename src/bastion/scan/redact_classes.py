"""What a result may have redacted: the classes ``secrets`` and ``pii``, as routes and policies name them.

Issue 15, "Result inspection and redaction". A route's ``results.redact`` (``bastion.config.results``)
and the ``@redact(...)`` obligation of a deciding permit name classes of values the client must not
see in results: ``secrets`` (credentials: cloud keys, provider tokens, private keys, JWTs, passwords
in connection strings and assignments) and ``pii`` (personal data: emails, phone numbers, payment
cards, IBANs, national ids). ``@redact`` takes one class or several separated by commas
(``@redact("secrets,pii")``). The obligations of several permits are MERGED as a union
(``@redact("secrets")`` on one and ``@redact("pii")`` on another give both), never a conflict: a
permit can only add redaction to a call, and a route's default is never taken away by a policy.

This module is dependency-free on purpose: the policy loader validates ``@redact`` with it at start.
"""

from __future__ import annotations

import functools
from typing import Literal

__all__ = ["REDACT_CLASSES", "RedactClass", "merge_redact", "parse_redact"]

RedactClass = Literal["secrets", "pii"]
REDACT_CLASSES: tuple[RedactClass, ...] = ("secrets", "pii")
"""Every class, in the order they are written back (``merge_redact``)."""


@functools.lru_cache(maxsize=64)
def parse_redact(value: str) -> frozenset[RedactClass]:
    """The classes a ``@redact`` value names: ``"secrets"``, ``"pii"``, ``"secrets,pii"`` (spaces
    around the commas and upper case allowed). Raises ``ValueError`` naming an unknown class, or
    when the value names none."""
    names = [part.strip().lower() for part in value.split(",")]
    unknown = [name for name in names if name not in REDACT_CLASSES]
    if unknown or not any(names):
        choices = ", ".join(REDACT_CLASSES)
        raise ValueError(f"@redact({value!r}) must name {choices}, or several of them separated by commas")
    return frozenset(name for name in REDACT_CLASSES if name in names)


def merge_redact(first: str, second: str) -> str:
    """Two ``@redact`` values as one: the union of their classes, written in ``REDACT_CLASSES``
    order (``merge_redact("pii", "secrets") == "secrets,pii"``). Raises ``ValueError`` like
    ``parse_redact``."""
    both = parse_redact(first) | parse_redact(second)
    return ",".join(name for name in REDACT_CLASSES if name in both)
