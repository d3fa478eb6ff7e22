"""The authorization server's HTML pages: sign-in, consent and errors, rendered on the server.

The pages work without JavaScript and load nothing from elsewhere: the one stylesheet
(``templates/style.css``) is inlined and allowed by its SHA-256 hash in the
Content-Security-Policy. Templates are Jinja2 with autoescaping on. Every response carries
the headers of ``_security_headers``: no framing (clickjacking), no caching, no referrer to other sites.

The consent page carries the confused-deputy protections of the MCP security best practices
(2025-11-25, "Confused Deputy Problem"): it names the client and shows its client_id, shows
where the browser goes after approval, the route and scopes asked for, who is signed in, and a
warning for a client Bastion has not verified.

``set_cookie`` and ``clear_cookie`` set only ``__Host-`` cookies (RFC 6265bis section 4.1.3.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.responses import HTMLResponse, Response

__all__ = ["clear_cookie", "consent_page", "error_page", "render_page", "set_cookie", "sign_in_page"]

_TEMPLATES = Path(__file__).parent / "templates"

_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_STYLE = (_TEMPLATES / "style.css").read_text(encoding="utf-8").strip()

_STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode("utf-8")).digest()).decode("ascii")
"""The CSP hash source of the inline ``<style>`` block shared by every page."""

# A CSP scheme-source (``vscode:``) or host-source (``https://app.example:8443``, ``http://[::1]:*``).
_CSP_SOURCE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(//(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-*]+(\.[A-Za-z0-9\-]+)*)(:(\d{1,5}|\*))?)?"
)


def _csp_sources(origins: Sequence[str]) -> str:
    for origin in origins:
        if not _CSP_SOURCE.fullmatch(origin):
            raise ValueError(f"form_action: {origin!r} is not an origin (scheme://host[:port]) or a scheme (name:)")
    return "".join(f" {origin}" for origin in origins)


def _check_link(url: str, what: str) -> str:
    """Accept a same-origin path or an http(s) URL, nothing that could run script (``javascript:``)."""
    parts = urlsplit(url)
    same_origin_path = not parts.scheme and not parts.netloc and url.startswith("/") and not url.startswith("//")
    if not (same_origin_path or (parts.scheme in {"https", "http"} and parts.netloc)):
        raise ValueError(f"{what}: {url!r} is neither a path nor an http(s) URL")
    return url


def _security_headers(form_action: Sequence[str]) -> dict[str, str]:
    csp = (
        f"default-src 'none'; style-src '{_STYLE_HASH}'; img-src 'none'; "
        f"form-action 'self'{_csp_sources(form_action)}; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the
        # pages' own form POSTs (Fetch, "serializing a request origin"), which the Origin check refuses
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }


def render_page(template: str, *, status_code: int, form_action: Sequence[str], **context: Any) -> HTMLResponse:
    """Render ``templates/<template>`` (autoescaped, ``title`` and the page's own values in
    ``context``) with the security headers; ``form_action`` lists the origins its forms may
    lead to besides Bastion's own (CSP ``form-action``). Raises ``ValueError`` for a bad origin."""
    headers = _security_headers(form_action)
    html = _ENV.get_template(template).render(style=Markup(_STYLE), **context)  # noqa: S704 - our own stylesheet
    return HTMLResponse(html, status_code=status_code, headers=headers)


def sign_in_page(
    *,
    action: str,
    transaction: str,
    csrf_token: str,
    client_name: str,
    error: str | None = None,
    username: str = "",
    status_code: int = 200,
    providers: Sequence[tuple[str, str]] = (),
    password_form: bool = True,
    form_action: Sequence[str] = (),
) -> HTMLResponse:
    """The "Sign in to Bastion" page.

    ``providers`` are ``(label, url)`` links "Sign in with <label>" to OpenID Connect providers. When
    ``password_form`` (a local users file is configured) a username/password form POSTs ``username``,
    ``password`` and the hidden ``transaction`` and ``csrf_token`` to ``action``; ``error`` is shown above
    it and ``username`` refills it. ``form_action`` lists extra CSP form-action origins (``scheme://host``).
    Raises ``ValueError`` when ``action`` or a provider URL is not a path or http(s) URL, or an origin is bad.
    """
    return render_page(
        "sign_in.html",
        status_code=status_code,
        form_action=form_action,
        title="Sign in to Bastion",
        action=_check_link(action, "action"),
        transaction=transaction,
        csrf_token=csrf_token,
        client_name=client_name,
        error=error,
        username=username,
        providers=[(label, _check_link(url, "providers")) for label, url in providers],
        password_form=password_form,
    )


def consent_page(
    *,
    action: str,
    transaction: str,
    csrf_token: str,
    client_name: str,
    client_id: str,
    redirect_host: str,
    resource_name: str,
    resource_uri: str,
    scopes: Sequence[str],
    user_label: str,
    unverified_client: bool,
    form_action: Sequence[str] = (),
) -> HTMLResponse:
    """The "Allow <client> to use <resource>?" page (MCP security best practices: confused deputy).

    Shows the client's name and client_id, "After you approve, you will be sent to <redirect_host>", the
    route (``resource_name``, ``resource_uri``), the ``scopes``, who is signed in (``user_label``) and, when
    ``unverified_client`` (dynamically registered or a metadata-document client not on an allow list), a
    warning. One form POSTs ``decision=approve`` or ``decision=deny`` with the hidden ``transaction`` and
    ``csrf_token`` to ``action``. Pass the client's redirect origin in ``form_action``: Chromium applies
    CSP form-action to the redirect that follows the POST. Raises ``ValueError`` as ``sign_in_page``.
    """
    return render_page(
        "consent.html",
        status_code=200,
        form_action=form_action,
        title=f"Allow {client_name} to use {resource_name}?",
        action=_check_link(action, "action"),
        transaction=transaction,
        csrf_token=csrf_token,
        client_name=client_name,
        client_id=client_id,
        redirect_host=redirect_host,
        resource_name=resource_name,
        resource_uri=resource_uri,
        scopes=list(scopes),
        user_label=user_label,
        unverified_client=unverified_client,
    )


def error_page(*, title: str, message: str, status_code: int) -> HTMLResponse:
    """A page for an error that must not be redirected to the client (RFC 6749 section 4.1.2.1):
    an unknown client_id, or a redirect_uri that is missing, invalid or not registered."""
    return render_page("error.html", status_code=status_code, form_action=(), title=title, message=message)


def _check_host_cookie(name: str) -> None:
    if not name.startswith("__Host-"):
        raise ValueError(f"cookie {name!r} must have the __Host- prefix")


def set_cookie(response: Response, name: str, value: str, *, max_age_s: int, path: str = "/") -> None:
    """Set a ``__Host-`` cookie: Secure; HttpOnly; SameSite=Lax; Path=/; no Domain; Max-Age=``max_age_s``.

    Raises ``ValueError`` when ``name`` lacks the ``__Host-`` prefix or ``path`` is not ``/`` (the prefix
    requires both, RFC 6265bis section 4.1.3.2).
    """
    _check_host_cookie(name)
    if path != "/":
        raise ValueError(f"cookie {name!r}: a __Host- cookie must have Path=/, not {path!r}")
    response.set_cookie(name, value, max_age=max_age_s, path="/", secure=True, httponly=True, samesite="lax")


def clear_cookie(response: Response, name: str) -> None:
    """Expire the ``__Host-`` cookie ``name`` (same attributes as ``set_cookie``). Raises ``ValueError`` as it."""
    _check_host_cookie(name)
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="lax")
