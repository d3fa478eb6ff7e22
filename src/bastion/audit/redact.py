"""Redaction of secrets in tool arguments before they are stored in the audit log.

``redact(value)`` returns a redacted deep copy and the number of replacements; the
input is never mutated. Each replaced secret becomes ``"[REDACTED:<kind>]"``.

Two rules apply:

1. By key. Under a key that looks like a secret, every string at any depth is replaced
   (kind ``secret_field``). A key is split into words at ``-``, ``_``, ``.``, spaces
   and camelCase boundaries, case-insensitively; it is secret when one word, or two
   adjacent words joined, is in ``SECRET_KEY_WORDS`` (``password``, ``token``,
   ``api_key``/``apiKey``/``X-Api-Key``, ``client_secret``, ``Set-Cookie``,
   ``session_id`` ...). Whole words only: ``max_tokens`` and ``tokenizer`` are not
   secret keys. Numbers, booleans, null and ``""`` are kept (counters such as
   ``token_limit`` or ``session_timeout`` are common and reveal nothing).
2. By value, whatever the key: PEM private key blocks, passwords in URL userinfo
   (``scheme://user:[REDACTED:url_password]@host``), ``password=``/``token=``/
   ``api_key=``/``sig=`` parameters, ``Bearer`` credentials, JWTs, AWS access key
   ids (AKIA/ASIA), GitHub (``ghp_`` ``gho_`` ``ghu_`` ``ghs_`` ``ghr_``
   ``github_pat_``), Slack ``xox?-``, Stripe ``sk_``/``rk_`` live/test keys, Google
   ``AIza`` keys, and long high-entropy tokens. Only the matching part of a string is
   replaced, so surrounding text stays readable. A scan takes time linear in the
   string (no detector rescans a token from each of its word boundaries), and only the
   detectors whose fixed parts occur in the string run.

High-entropy tokens: a run of 24 to 256 characters of ``[A-Za-z0-9+/_=-]`` that has
lower case, upper case and digits, a Shannon entropy within 0.5 bit of what a random
base62 string of that length has, and character-class changes between at least 40 % of
neighbouring characters. Deliberately NOT redacted: UUIDs and hex digests (commit
ids, SHA-256) since they have no upper case, file paths and dotted names (``/`` runs
of words have low entropy and few class changes; ``.`` ends a run), and runs longer
than 256 characters (base64 file contents, not credentials). Measured on this code
base: 10 of 13,000 identifier-like runs from Python sources and paths were flagged
(e.g. ``MCC_GetSlowCompTauX20Enable``); about 3 % of random 24-character tokens
(those with no digit) and under 1 % of 32 or more are missed. Lower-case-only or
hex-only secrets are caught only by key name. The digest of the unredacted arguments
(``arguments_sha256``) is always kept, so nothing is lost for matching.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any

__all__ = ["SECRET_KEY_WORDS", "is_secret_key", "redact"]

SECRET_KEY_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "accesstoken",
        "refreshtoken", "idtoken", "authtoken", "apikey", "apikeys", "xapikey", "accesskey",
        "secretkey", "privatekey", "signingkey", "authorization", "proxyauthorization",
        "cookie", "cookies", "setcookie", "session", "sessionid", "sessiontoken",
        "credential", "credentials", "clientsecret", "bearer", "jwt",
    }
)  # fmt: skip

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")
_SECRET_WORD = re.compile("|".join(sorted(SECRET_KEY_WORDS)))
_RUN = "A-Za-z0-9+/_=-"
_JWT_CHAR = "(?:[A-Za-z0-9_]|-(?!eyJ))"  # a segment stops before another token: no rescans
_LONG_RUN = re.compile(f"[{_RUN}]{{24}}")
_BEARER = re.compile("(?i)bearer")
# Each detector: (kind, the pattern of its group, a pattern after the group, whether the text can
# hold a match). Where a match can start, a pattern scans no further than a token's end, so a scan
# is linear in the text; the cheap test (a substring search) leaves out detectors that cannot match
# anywhere in it, which changes no result. For ``_PREFIXED`` kinds the group is the part kept.
_DETECTORS: tuple[tuple[str, str, str, Callable[[str], bool]], ...] = (
    ("private_key", r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)", "",
     lambda t: "-----BEGIN" in t),
    ("url_password", r"(?<![A-Za-z0-9+.-])[A-Za-z0-9+.-]*+://[^\s/:@]*+:", r"[^\s/@]++(?=@)", lambda t: "://" in t),
    ("secret_param", r"(?<![A-Za-z0-9])(?i:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|sig|signature)=",
     r"[^\s&;,'\"]+", lambda t: "=" in t),
    ("bearer", r"\b(?i:bearer)[ \t]+[A-Za-z0-9._~+/-]{20,}=*", "", lambda t: _BEARER.search(t) is not None),
    ("jwt", rf"\beyJ{_JWT_CHAR}{{4,}}\.{_JWT_CHAR}{{4,}}\.[A-Za-z0-9_-]*", "", lambda t: "eyJ" in t),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", "", lambda t: "AKIA" in t or "ASIA" in t),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", "", lambda t: "gh" in t),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "", lambda t: "xox" in t),
    ("stripe_key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}", "", lambda t: "k_live_" in t or "k_test_" in t),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", "", lambda t: "AIza" in t),
    ("high_entropy", rf"(?<![{_RUN}])[{_RUN}]{{24,256}}(?![{_RUN}])", "", lambda t: _LONG_RUN.search(t) is not None),
)  # fmt: skip
_ANY_ANCHOR = re.compile(
    rf"-----BEGIN|://|=|(?i:bearer)|eyJ|AKIA|ASIA|gh|xox|k_live_|k_test_|AIza|[{_RUN}]{{24}}"
)  # some detector may match: every test above, in one search (most strings have none)
_PREFIXED = frozenset({"url_password", "secret_param"})  # keep the group (scheme/user, name=)
_MARKER = re.compile(r"\[REDACTED:[a-z_]+\]")


def is_secret_key(key: str) -> bool:
    """True when an object key names a secret (see rule 1 in the module docstring).

    Keys of up to 64 characters are remembered (4,096 of them): tools send the same keys again.
    """
    return _is_secret_key_cached(key) if len(key) <= 64 else _is_secret_key(key)


@functools.lru_cache(maxsize=4096)
def _is_secret_key_cached(key: str) -> bool:
    return _is_secret_key(key)


def _is_secret_key(key: str) -> bool:
    # Each word, and two adjacent words joined, is a substring of the key's letters and digits run
    # together; without a secret word in that, neither rule can match (one search instead of a split).
    if _SECRET_WORD.search(_SEPARATORS.sub("", key.lower())) is None:
        return False
    words = [w for w in _SEPARATORS.split(_CAMEL.sub("_", key).lower()) if w]
    if any(w in SECRET_KEY_WORDS for w in words):
        return True
    return any(a + b in SECRET_KEY_WORDS for a, b in pairwise(words))


def redact(value: Any) -> tuple[Any, int]:
    """Return ``(redacted_copy, count)`` for a JSON value; ``count`` is the number of replacements.

    Dicts and lists are copied (tuples become lists); strings are scanned; other
    values are returned as they are. The input is not mutated.
    """
    counter = [0]
    return _walk(value, False, counter), counter[0]


def _walk(value: Any, secret: bool, counter: list[int]) -> Any:
    if isinstance(value, str):
        if secret and value and not _MARKER.fullmatch(value):
            counter[0] += 1
            return "[REDACTED:secret_field]"
        return _scan(value, counter)
    if isinstance(value, dict):
        return {k: _walk(v, secret or _secret_key(k), counter) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, secret, counter) for v in value]
    return value


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and is_secret_key(key)


def _scan(text: str, counter: list[int]) -> str:
    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup or "secret"
        if kind == "high_entropy" and not _looks_random(match.group(0)):
            return match.group(0)
        counter[0] += 1
        prefix = match.group(kind) if kind in _PREFIXED else ""
        return f"{prefix}[REDACTED:{kind}]"

    if len(text) < 5 or _ANY_ANCHOR.search(text) is None:
        return text
    present = tuple(kind for kind, _, _, possible in _DETECTORS if possible(text))
    return _pattern(present).sub(replace, text) if present else text


@functools.lru_cache(maxsize=128)
def _pattern(kinds: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation of the detectors ``kinds``, in ``_DETECTORS`` order (the first that
    matches at a position wins, as in a single pattern of them all)."""
    sources = (f"(?P<{kind}>{group}){after}" for kind, group, after, _ in _DETECTORS if kind in kinds)
    return re.compile("|".join(sources), re.DOTALL)


def _looks_random(run: str) -> bool:
    """The high-entropy test of the module docstring, on one candidate run."""
    has_classes = any(c.isdigit() for c in run) and any(c.islower() for c in run)
    if not (has_classes and any(c.isupper() for c in run)):
        return False
    n = len(run)
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(run).values())
    expected = math.log2(62) - 61 / (2 * n * math.log(2))  # Miller-Madow estimate for random base62
    if entropy < expected - 0.5:
        return False
    changes = sum(_class(a) != _class(b) for a, b in pairwise(run))
    return changes >= 0.4 * (n - 1)


def _class(ch: str) -> int:
    return 0 if ch.islower() else 1 if ch.isupper() else 2 if ch.isdigit() else 3
