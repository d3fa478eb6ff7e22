"""Human-readable durations for token lifetimes and windows (``15m``, ``1h``, ``2d``)."""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# At most nine digits: anything longer is a typo, not a lifetime.
_DURATION = re.compile(r"(?P<count>[0-9]{1,9})(?P<unit>[smhd]?)")


def parse_duration(text: str) -> int:
    """Parse a duration into whole seconds.

    Accepted forms are a non-negative integer optionally followed by one unit
    letter: ``s`` (seconds), ``m`` (minutes), ``h`` (hours), ``d`` (days); a
    bare integer means seconds. Examples: ``"90s"`` -> 90, ``"15m"`` -> 900,
    ``"1h"`` -> 3600, ``"2d"`` -> 172800, ``"900"`` -> 900.

    Raises ``ValueError`` for anything else (empty text, signs, fractions,
    spaces, unknown or upper-case units, more than nine digits, non-strings).
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string such as '15m', not {type(text).__name__}")
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use an integer with an optional unit s, m, h or d")
    return int(match["count"]) * _UNITS[match["unit"]]
