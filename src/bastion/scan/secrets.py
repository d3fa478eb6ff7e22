"""Hard-coded secrets: credentials written as values where a reference belongs.

``find_secrets`` knows the token formats the major providers publish (AWS access key ids, GitHub
and GitLab tokens, Slack tokens and webhooks, OpenAI, Anthropic, Google, Stripe, SendGrid,
Hugging Face, npm and PyPI tokens, JWTs, PEM private keys, connection strings with a password),
and, for a value under a key that names a secret (``API_KEY``, ``token``, ``Authorization``...),
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

__all__ = ["SecretHit", "find_secrets", "is_reference", "mask"]

_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("AWS access key id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
        ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{50,}\b"),
        ("GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
        ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
        ("Slack webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]{16,}"),
        ("Anthropic API key", r"\bsk-ant-[a-z]+\d{2}-[A-Za-z0-9_-]{20,}"),
        ("OpenAI API key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}"),
        ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
        ("Stripe key", r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b"),
        ("SendGrid key", r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),
        ("Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
        ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
        ("PyPI token", r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
        ("JSON Web Token", r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
        ("private key", r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
        ("connection string with a password", r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]+:[^\s@/]{3,}@[^\s/]+"),
        ("Azure storage key", r"AccountKey=[A-Za-z0-9+/=]{40,}"),
    )
)
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
    hits = [SecretHit(kind, m.start(), m.end()) for kind, pattern in _FORMATS for m in pattern.finditer(scrubbed)
            if not _PLACEHOLDER.search(m.group())]  # fmt: skip
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
