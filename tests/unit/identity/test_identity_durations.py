"""parse_duration: the accepted forms and the refused ones."""

from __future__ import annotations

import pytest

from bastion.identity import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("900", 900),
        ("0", 0),
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("24h", 86400),
        ("2d", 172800),
        ("007m", 420),
    ],
)
def test_parses(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 15m",
        "15m ",
        "15 m",
        "15M",
        "1.5h",
        "-5m",
        "+5m",
        "15mm",
        "m",
        "1w",
        "1h30m",
        "15m\n",
        "\uff11\uff15",
        "9999999999",
        "0x10",
        "inf",
    ],
)
def test_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(900)  # type: ignore[arg-type]
