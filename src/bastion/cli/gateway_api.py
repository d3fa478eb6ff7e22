"""Asking the running gateway to act, as a person: the commands whose decision the gateway makes.

``bastion approvals approve|deny`` and ``bastion tools approve`` do not write the stores or the
audit log themselves: the gateway stays the audit log's only writer, and it checks the policy
(``approvals/decide``, ``definitions/approve``) as for a person in the portal. So the command mints
a five-minute access token for the person (``--as``), POSTs the decision to the gateway's portal
API and reports its answer.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx2
from rich.markup import escape

from bastion.catalog.diff import visible
from bastion.cli.common import fail
from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.identity import SigningKeys, TokenIssuer

__all__ = ["TOKEN_TTL_S", "error_text", "person_token", "post_as"]

TOKEN_TTL_S = 300
"""Lifetime of the token a command mints for the person it acts as, in seconds."""
_TIMEOUT_S = 10.0


def person_token(settings: BastionConfig, sub: str, email: str | None, groups: list[str]) -> str:
    """A ``TOKEN_TTL_S`` access token for ``sub`` (kind ``User``), as ``bastion token mint`` mints one
    for the first route. Exits 2 when the issuer refuses the claims."""
    max_ttl = settings.identity.max_token_ttl
    try:
        keys = SigningKeys.load_or_create(settings.data_dir, verify_window_s=max_ttl,
                                          file=settings.identity.signing_keys_file)  # fmt: skip
    except ConfigError as exc:
        raise fail(exc.message) from None
    issuer = TokenIssuer(keys, settings.issuer, max_ttl)
    try:
        minted = issuer.mint(sub=sub, audience=settings.resource_uri(settings.routes[0]),
                             ttl_s=min(TOKEN_TTL_S, max_ttl), email=email, groups=groups, kind="User")  # fmt: skip
    except ValueError as exc:
        raise fail(escape(str(exc))) from None
    return minted.token


def error_text(response: httpx2.Response) -> str:
    """The gateway's ``error_description`` (with its code and the status), or the status alone."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error_description"), str):
        return f"{body['error_description']} ({response.status_code} {body.get('error')})"
    return f"the gateway answered {response.status_code}"


def post_as(
    settings: BastionConfig,
    path: str,
    body: dict[str, Any],
    *,
    sub: str,
    email: str | None,
    groups: list[str],
    url: str | None,
    ca_file: Path | None,
    what: str,
) -> httpx2.Response:
    """POST ``body`` as JSON to the gateway's ``path`` (under ``url``, default ``server.base_url``)
    with a token for ``sub``, checking its certificate against ``ca_file`` when given: no redirects
    followed, no proxy from the environment (the token goes to the gateway only), 10 s. Returns
    the 200 answer; exits 2 for a bad ``--ca-file`` or URL, 1 when the gateway is not reachable
    (saying ``what`` only the running gateway does) or answers anything but 200 (its
    ``error_description``, invisible characters shown)."""
    base = (url or settings.server.base_url).rstrip("/")
    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file is not None else True
    except OSError as exc:  # missing or not PEM
        raise fail(escape(f"--ca-file {ca_file}: {exc}")) from None
    token = person_token(settings, sub, email, groups)
    target = f"{base}{path}"
    try:
        with httpx2.Client(verify=verify, timeout=_TIMEOUT_S, trust_env=False) as client:
            response = client.post(target, json=body, headers={"authorization": f"Bearer {token}"})
    except (httpx2.UnsupportedProtocol, httpx2.InvalidURL) as exc:
        raise fail(escape(f"bad gateway URL {target}: {exc}")) from None
    except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
        raise fail(escape(f"the gateway at {base} is not reachable ({exc}); {what} are made by the running "
                          "gateway (start it with bastion serve)"), code=1) from None  # fmt: skip
    except httpx2.HTTPError as exc:
        raise fail(escape(f"the gateway at {base} did not answer: {type(exc).__name__}: {exc}"), code=1) from None
    if response.status_code != 200:
        raise fail(escape(visible(error_text(response))), code=1)
    return response
