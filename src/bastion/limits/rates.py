"""A rate or quota as people write it: ``20/minute``, ``500/day``, ``5/30s``.

``parse_rate`` reads ``<count>/<window>``: ``count`` a positive integer, ``window`` one of
``second``, ``minute``, ``hour``, ``day`` (or a duration such as ``30s``, ``15m``,
``2h``, ``bastion.identity.durations``). A rate of N per window admits at most N calls in
any window (``bastion.stores.counters``: a sliding-window log, so the burst is N).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion.identity.durations import parse_duration

__all__ = ["LIMIT_KEYS", "MAX_WINDOW_S", "RATE_UNITS", "Rate", "parse_rate"]

LIMIT_KEYS = ("principal", "client", "route", "tool", "global")
"""What a limit counts separately (``limits[].per``, ``@rate_per``): each principal (the default),
each OAuth client, each route, each tool, or everything it applies to together."""

RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
"""The named windows of a rate."""

MAX_WINDOW_S = 366 * 86400
"""The longest window of a rate (the housekeeping sweep forgets older hits)."""

_RATE = re.compile(r"(?P<count>[1-9][0-9]{0,8})\s*/\s*(?P<window>[a-z0-9]+)")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` in any ``window_s`` seconds; ``text`` is how it was written."""

    count: int
    window_s: int
    text: str


def parse_rate(text: str) -> Rate:
    """Parse ``<count>/<window>`` (module docstring). Raises ``ValueError`` naming the problem."""
    if not isinstance(text, str):
        raise ValueError(f"a rate is text such as '20/minute', not {type(text).__name__}")
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid rate {text!r}: write <count>/<window>, e.g. 20/minute, 500/day, 5/30s")
    window = match["window"]
    seconds = RATE_UNITS.get(window)
    if seconds is None:
        try:
            seconds = parse_duration(window)
        except ValueError:
            raise ValueError(
                f"invalid rate {text!r}: the window is second, minute, hour, day or a duration such as 30s"
            ) from None
    if not 1 <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"invalid rate {text!r}: the window must be from one second to 366 days")
    return Rate(int(match["count"]), seconds, text.strip())
