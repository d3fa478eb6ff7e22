"""``routes[].results``: what a route redacts from results and does with instructions found in them.

Issue 15, "Result inspection and redaction"::

    routes:
      - name: crm
        results:
          redact: [secrets, pii]   # default: [secrets]
          injection: replace       # default: flag
          injection_detector: thorough   # default: fast

``redact`` names the classes of values replaced by ``[REDACTED:<rule>]`` in every result, resource
and prompt the route relays (``bastion.scan.redact_classes``: ``secrets``, ``pii``); a deciding
permit's ``@redact(...)`` adds classes for its calls, never removes one. ``injection``: ``flag``
records instructions aimed at the model in the outcome record; ``replace`` also replaces the text
that holds them by a notice. ``injection_detector``: ``fast`` (the default) finds them with the
content rules of ``bastion.scan.content`` (overrides of earlier instructions, text hidden from the
user, pseudo-tags, tag characters: one RE2 pass, microseconds); ``thorough`` also runs the
definition scanner's wording and Unicode analysis on each text (``scan_content``: reaching for
secrets, moving data out, steering other tools), which costs about 5-8 ms of CPU per 4 KB of text
on the event loop: for routes whose results are known to carry untrusted text (a fetch tool).

Why ``pii`` is not redacted by default: personal data is often what a tool is for (a CRM lookup
returns the customer's email and phone; redacting it would break such tools without a word), and
telling it from ordinary data is less certain than telling a provider's token format, so it is asked
for where it matters: per route, or per call by policy (``@redact("pii")`` on the permit that lets
contractors read customer records, say). A credential in a result is never what a caller needs, so
``secrets`` are redacted unless a route says ``redact: []``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from bastion.config.base import _Model
from bastion.scan.redact_classes import RedactClass

__all__ = ["ResultSettings"]


class ResultSettings(_Model):
    """``routes[].results`` (see the module docstring): ``redact``, the classes redacted on every
    call (no duplicates); ``injection``, ``flag`` or ``replace``; ``injection_detector``, ``fast`` or
    ``thorough``."""

    redact: tuple[RedactClass, ...] = ("secrets",)
    injection: Literal["flag", "replace"] = "flag"
    injection_detector: Literal["fast", "thorough"] = "fast"

    @field_validator("redact")
    @classmethod
    def _once(cls, value: tuple[RedactClass, ...]) -> tuple[RedactClass, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each class once: secrets, pii")
        return value
