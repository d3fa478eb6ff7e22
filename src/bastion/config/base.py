"""What every configuration model shares: strict frozen models, and references to secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from bastion.egress.allowlist import AllowList
from bastion.errors import ConfigError

__all__ = ["AllowEntries", "SecretRef", "check_service_url", "url_with_password"]


def _allow_entries(value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        AllowList.parse(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    return value


AllowEntries = Annotated[tuple[str, ...], AfterValidator(_allow_entries)]
"""Egress allow list entries (CIDRs, ``host[:port]``), checked by ``AllowList.parse``."""


def check_service_url(url: str, schemes: tuple[str, ...], where: str, form: str, password_key: str) -> None:
    """Raise ``ValueError`` (for pydantic to report at ``where``) unless ``url`` has one of ``schemes``
    and a host (``form`` says what is expected) and no password in it (``password_key`` says where
    its reference goes instead)."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{where} must be {form}")
    if parts.password:
        raise ValueError(f"{where} carries a password: give it as {password_key}: {{env: NAME}}")


def url_with_password(url: str, password: SecretRef | None) -> str:
    """``url`` (``scheme://user@host...``) with ``password`` resolved into its user info (percent-encoded),
    or ``url`` itself without one. Raises ``ConfigError`` when the reference cannot be resolved."""
    if password is None:
        return url
    parts = urlsplit(url)
    secret = quote(password.resolve(), safe="")
    return parts._replace(netloc=f"{parts.username or ''}:{secret}@{parts.netloc.rpartition('@')[2]}").geturl()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """A reference to a secret resolved at run time: exactly one of ``env`` or ``file``."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise ValueError("a secret is written inline here; use a reference such as {env: NAME} or {file: PATH}")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference needs exactly one of 'env' or 'file'")
        return self

    def resolve(self) -> str:
        """Return the secret's value. Raises ``ConfigError`` when it is not set or not readable."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set")
            return value
        if self.file is None:
            raise ConfigError("a secret reference needs 'env' or 'file'")
        try:
            return self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"secret file {self.file} cannot be read: {exc.strerror}") from exc
