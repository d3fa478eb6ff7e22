"""``server.cors``: which browser origins may use the MCP endpoints cross-origin.

Browsers let a page on one origin read a response from another only when the
response says so (Fetch standard, "CORS protocol"). ``allowed_origins`` lists
the origins (``scheme://host[:port]``) whose pages may call the routes' MCP
endpoints, or is ``["*"]`` for every origin. Each listed origin also passes
the endpoints' ``Origin`` check (DNS rebinding protection, MCP
basic/transports): the check admits Bastion's own origins,
``server.allowed_origins`` and these; with ``"*"`` it admits every ``Origin``
and the rebinding protection rests on the ``Host`` check alone.

``allow_credentials`` lets such pages send cookies and HTTP authentication
(``Access-Control-Allow-Credentials: true``); MCP clients send their token in
``Authorization``, which needs no credentials mode, so it is off by default
and refused together with ``"*"``.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import _Model

__all__ = ["CorsSettings", "normalize_origin"]

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """``value`` as a browser serializes an origin: ``scheme://host[:port]``, lower case, no
    default port (RFC 6454 section 6.1). ``"*"`` stays ``"*"``.

    Raises ``ValueError`` for anything else: another scheme, a path, query or fragment, user
    information, a wildcard inside the name, ``null``.
    """
    if value == "*":
        return value
    problem = f"{value!r} is not an origin (http(s)://host[:port]) nor '*'"
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(problem) from exc
    host = parts.hostname or ""
    if (
        parts.scheme not in _DEFAULT_PORTS
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not _is_host(host)
    ):
        raise ValueError(problem)
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}")


def _is_host(host: str) -> bool:
    if _HOSTNAME.fullmatch(host):
        return True
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


class CorsSettings(_Model):
    """Cross-origin access to the MCP endpoints (see the module docstring).

    ``allowed_origins``: origins, normalized by ``normalize_origin``, or ``["*"]`` alone.
    ``allow_credentials``: send ``Access-Control-Allow-Credentials: true``; refused with ``"*"``.
    ``max_age_s``: how long a browser may cache a preflight answer (``Access-Control-Max-Age``).
    """

    allowed_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_s: int = Field(default=600, ge=0, le=86400)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        origins = tuple(dict.fromkeys(normalize_origin(origin) for origin in value))
        if "*" in origins and len(origins) > 1:
            raise ValueError("'*' admits every origin: list it alone")
        return origins

    @model_validator(mode="after")
    def _no_credentials_with_wildcard(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allowed_origins:
            raise ValueError(
                "allow_credentials cannot be used with allowed_origins ['*']: "
                "list the origins that may send credentials"
            )
        return self
