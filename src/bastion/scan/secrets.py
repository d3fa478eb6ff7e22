"""Hard-coded secrets: credentials written as values where a reference belongs.

``find_secrets`` finds the token formats the major providers publish with the same rules that
redact results (``bastion.scan.content``, kind ``secret``: AWS, Google, Azure, GitHub, GitLab, Slack,
Stripe, Anthropic, OpenAI, Hugging Face, npm, PyPI, SendGrid, JWTs, PEM private keys, passwords in
URLs...), and, for a value under a key that names a secret (``API_KEY``, ``token``, ``Authorization``...),
any long random-looking string (Shannon entropy over 3.5 bits per character). A value given by
reference is not a secret: ``${env:X}``, ``${X}``, ``$X``, ``${input:x}``, ``{{x}}``,
``env:X``, ``op://...`` (1Password), ``vault:...``, and placeholders such as ``<your-key>``.

Findings never carry the value: ``mask`` keeps the first four characters and the length.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from bastion.scan.content import Kind, detect, rule

__all__ = ["SecretHit", "find_secrets", "is_reference", "mask"]

_SECRETS: frozenset[Kind] = frozenset({"secret"})
_SECRET_KEY = re.compile(r"key|token|secret|passw|pwd|pass\b|auth|credential|bearer|cookie|session|private|signature",
                         re.IGNORECASE)  # fmt: skip
_REFERENCE = re.compile(
    r"^\s*(?:\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\{\{[^}]+\}\}|%[A-Za-z_][A-Za-z0-9_]*%|env:[A-Za-z_][\w]*|op://\S+"
    r"|vault:\S+|secret:\S+|keychain:\S+|file:\S+)\s*$"
)
_EMBEDDED_REFERENCE = re.compile(r"\$\{(?:env:|input:)?[A-Za-z_][\w.-]*\}|\{\{[^}]+\}\}")
_PLACEHOLDER = re.compile(r"<[^>]*>|your[_ -]|_here\b|\bxxx|\.\.\.|example|placeholder|changeme|redacted|dummy|"
                          r"\*{3,}|^(?:x+|0+|test|none|null|true|false)$", re.IGNORECASE)  # fmt: skip
_CANDIDATE = re.compile(r"[A-Za-z0-9_\-+/=.~]{20,}")
_ANY_FORMAT = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}|-----BEGIN|://[^\s:/@]+:[^\s@/]+@")


@dataclass(frozen=True, slots=True)
class SecretHit:
    """A secret found in a value: what it looks like (``kind``) and where."""

    kind: str
    start: int
    end: int


def is_reference(value: str) -> bool:
    """Whether ``value`` names a secret kept elsewhere rather than being one
    (``${env:TOKEN}``, ``$TOKEN``, ``op://vault/item``, ``<your-token>``...)."""
    return bool(_REFERENCE.match(value)) or (bool(_PLACEHOLDER.search(value)) and len(value) < 80)


def entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values()) if text else 0.0


def find_secrets(value: str, *, key: str = "") -> list[SecretHit]:
    """The secrets in ``value`` (a known token format anywhere; a long random-looking string
    when ``key`` names a secret). References and placeholders are not secrets. Never raises."""
    if len(value) < 16 or not _ANY_FORMAT.search(value) or is_reference(value):
        return []
    scrubbed = _EMBEDDED_REFERENCE.sub(lambda m: " " * len(m.group()), value[:65_536])
    hits = [SecretHit(rule(d.rule).title, d.start, d.end) for d in detect(scrubbed, _SECRETS)
            if not _PLACEHOLDER.search(scrubbed[d.start : d.end])]  # fmt: skip
    if hits or not _SECRET_KEY.search(key):
        return hits[:8]
    for match in _CANDIDATE.finditer(scrubbed):
        token = match.group()
        classes = sum(bool(re.search(c, token)) for c in (r"[a-z]", r"[A-Z]", r"\d"))
        if classes >= 2 and entropy(token) >= 3.5 and not _PLACEHOLDER.search(token):
            return [SecretHit("high-entropy value", match.start(), match.end())]
    return []


def mask(value: str) -> str:
    """A secret shown without its value: the first four characters and the length."""
    return f"{value[:4]}… ({len(value)} characters)"
