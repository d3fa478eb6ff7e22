"""Shared helpers for the oauth tests: one argon2id hash made once (hashing costs ~0.1 s)."""

from __future__ import annotations

from functools import cache

from bastion.oauth.users import hash_password

PASSWORD = "correct horse battery staple"


@cache
def password_hash() -> str:
    """The argon2id hash of ``PASSWORD``, computed once per test session."""
    return hash_password(PASSWORD)
