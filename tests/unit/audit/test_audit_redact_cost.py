"""Redaction costs time linear in the text: no input makes a detector rescan what it has scanned.

Before, a value detector could restart at every word boundary of one long token and scan to its
end each time: 80,000 characters of ``a-a-a-...`` took 57 s of CPU, ``a.a.a....`` 1.9 s.
"""

from __future__ import annotations

import importlib
import random
import re
import time
from itertools import pairwise

import pytest

from bastion.audit.redact import SECRET_KEY_WORDS, is_secret_key, redact

redact_module = importlib.import_module("bastion.audit.redact")  # the package exports the function
PATHOLOGICAL = ["a-", "a.", "a-a.", "eyJa-", "eyJaaaa.bbbb-", "a=", "-a=", "x://", "a_b-", "bearer ", "--", "AKIA-"]


@pytest.mark.parametrize("unit", PATHOLOGICAL)
def test_long_runs_of_token_fragments_are_scanned_in_linear_time(unit: str) -> None:
    text = unit * (200_000 // len(unit))
    start = time.process_time()
    redact({"value": text})
    assert time.process_time() - start < 2.0  # about 0.1 s; the old patterns took minutes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see -http://bob:hunter2@db.example/x", "see -http://bob:[REDACTED:url_password]@db.example/x"),
        ("x.git+ssh://bob:hunter2@host", "x.git+ssh://bob:[REDACTED:url_password]@host"),
        ("my-db-password=hunter2&x=1", "my-db-password=[REDACTED:secret_param]&x=1"),
        ("--token=abc", "--token=[REDACTED:secret_param]"),
        ("mytoken=abc", "mytoken=abc"),
        ("id-eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl", "id-[REDACTED:jwt]"),
    ],
)
def test_the_linear_detectors_redact_what_the_old_ones_did(text: str, expected: str) -> None:
    assert redact(text)[0] == expected


def _fragments(rng: random.Random) -> str:
    parts = ["password=", "://", "u:p@", "Bearer ", "eyJhbGciOiJ", ".", "-", "AKIA", "ghp_", "xoxb-", "sk_live_",
             "AIza", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", " ", "=", "@", "_",
             "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9", "abcdefghij", "0123456789", "Q"]  # fmt: skip
    return "".join(rng.choice(parts) for _ in range(rng.randint(1, 30)))


def test_leaving_out_detectors_that_cannot_match_changes_nothing() -> None:
    """``_scan`` runs only the detectors whose anchors occur; all of them at once give the same text."""
    every = redact_module._pattern(tuple(kind for kind, *_ in redact_module._DETECTORS))
    rng = random.Random(7)
    for _ in range(3000):
        text = _fragments(rng)
        scanned, all_at_once = [0], [0]
        assert redact_module._scan(text, scanned) == _scan_with(every, text, all_at_once), text
        assert scanned == all_at_once


def _scan_with(pattern: re.Pattern[str], text: str, counter: list[int]) -> str:
    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup or "secret"
        if kind == "high_entropy" and not redact_module._looks_random(match.group(0)):
            return match.group(0)
        counter[0] += 1
        return (match.group(kind) if kind in redact_module._PREFIXED else "") + f"[REDACTED:{kind}]"

    return pattern.sub(replace, text) if len(text) >= 5 else text


def _words_rule(key: str) -> bool:
    """Rule 1 as the module docstring states it, without the fast path."""
    camel = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", key)
    words = [w for w in re.split(r"[^a-z0-9]+", camel.lower()) if w]
    return any(w in SECRET_KEY_WORDS for w in words) or any(a + b in SECRET_KEY_WORDS for a, b in pairwise(words))


def test_the_secret_key_fast_path_agrees_with_the_rule() -> None:
    rng = random.Random(3)
    pieces = ["api", "Key", "key", "X", "-", "_", ".", " ", "token", "Tokens", "max", "pass", "word", "Word", "set",
              "Cookie", "session", "Id", "client", "Secret", "é", "K", "jwt", "pwd", "tokenizer", "2"]  # fmt: skip
    for _ in range(5000):
        key = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
        assert is_secret_key(key) == _words_rule(key), key
    long_key = "x" * 100 + "_api_key"
    assert is_secret_key(long_key)  # past 64 characters: not remembered, same rule
    assert not is_secret_key("x" * 100 + "_tokenizer")
