"""Routes and their upstreams in the configuration, and secret references.

Secrets are never written inline: an upstream environment variable or header
whose name looks like a secret must be a reference, ``{env: NAME}`` or
``{file: PATH}``, resolved at run time (``SecretRef.resolve``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.egress.allowlist import AllowList
from bastion.errors import ConfigError

__all__ = ["EnvValue", "HttpUpstream", "RouteSettings", "SecretRef", "StdioUpstream"]

_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth)",
    re.IGNORECASE,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """A reference to a secret resolved at run time: exactly one of ``env`` or ``file``."""

    env: str | None = None
    file: Path | None = None

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


EnvValue = str | SecretRef


def _check_inline_secrets(values: dict[str, EnvValue], what: str) -> dict[str, EnvValue]:
    for name, value in values.items():
        if isinstance(value, str) and _SECRET_NAME.search(name) and value:
            raise ValueError(
                f"{what} {name!r} looks like a secret written inline; "
                "use a reference such as {env: NAME} or {file: PATH}"
            )
    return values


class StdioUpstream(_Model):
    """An MCP server that Bastion starts and owns, speaking MCP over stdio.

    ``env`` is the whole environment of the process (scrubbed: nothing else of
    Bastion's environment is passed, except ``PATH`` and ``HOME`` unless
    overridden); values are literals or secret references.
    """

    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, EnvValue] = Field(default_factory=dict)
    cwd: Path | None = None
    restart_backoff_s: float = Field(default=1.0, gt=0, le=60)

    @field_validator("env")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, EnvValue]) -> dict[str, EnvValue]:
        return _check_inline_secrets(value, "environment variable")


class HttpUpstream(_Model):
    """An MCP server reached over Streamable HTTP at ``url``.

    ``headers`` are added to every upstream request (values literal or
    references); the client's ``Authorization`` header is never forwarded.
    """

    url: str
    headers: dict[str, EnvValue] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("headers")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, EnvValue]) -> dict[str, EnvValue]:
        return _check_inline_secrets(value, "header")


class UrlArgumentSettings(_Model):
    """Tool arguments that hold URLs, checked by the egress guard before a call is forwarded.

    ``names`` are top-level argument names; with ``format_uri`` every top-level argument
    whose JSON Schema (the tool's ``inputSchema``) says ``"format": "uri"`` is checked too.
    A value (a string, or each string of a list) must be an http(s) URL (plain http only
    with ``allow_http``) whose host is not loopback, private, link-local, CGNAT, multicast,
    reserved or a metadata address in any encoding, unless ``allow`` (CIDRs or
    ``host[:port]``) lists it for this route. The upstream resolves the name again when it
    fetches, so this stops literal and resolving addresses, not DNS rebinding by the upstream.
    """

    names: tuple[str, ...] = ()
    format_uri: bool = False
    allow: tuple[str, ...] = ()
    allow_http: bool = True

    @field_validator("allow")
    @classmethod
    def _allow_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            AllowList.parse(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value


class RouteSettings(_Model):
    """One route: a name, a public path, exactly one upstream, and the URL arguments to guard."""

    name: str
    path: str | None = None
    title: str | None = None
    stdio: StdioUpstream | None = None
    http: HttpUpstream | None = None
    url_arguments: UrlArgumentSettings | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.match(value):
            raise ValueError("route names are 1-63 lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or value.endswith("/") or "//" in value):
            raise ValueError("a route path starts with '/' and does not end with '/'")
        if value is not None and value.startswith("/.well-known"):
            raise ValueError("a route path may not be under /.well-known")
        return value

    @model_validator(mode="after")
    def _one_upstream(self) -> RouteSettings:
        if (self.stdio is None) == (self.http is None):
            raise ValueError("a route needs exactly one upstream: 'stdio' or 'http'")
        return self

    @property
    def public_path(self) -> str:
        """The path clients use, ``/mcp/<name>`` unless ``path`` is set."""
        return self.path or f"/mcp/{self.name}"
