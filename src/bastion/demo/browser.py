"""A person at a browser, scripted over plain HTTP: follows Bastion's sign-in and consent pages.

Used by ``bastion demo`` (and its tests) to show an MCP client signing in without a
person present. It reads the real HTML forms (``html.parser``), keeps cookies as a
browser would for the gateway's origin (Bastion's cookies are ``__Host-`` and
``Secure``; browsers keep them on http://127.0.0.1, a potentially trustworthy origin,
which ``http.cookiejar`` does not), and submits what a person would type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx2

__all__ = ["Form", "OAuthUser", "forms_of", "query_of"]

_MAX_PAGES = 4


@dataclass
class Form:
    """One ``<form>``: its action, method and the fields with their values."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, list[str]] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", ""), values.get("method", "get").lower()))
        elif tag in ("input", "button") and self.forms and "name" in values:
            kind = values.get("type", "submit" if tag == "button" else "text")
            if kind == "submit":
                self.forms[-1].buttons.setdefault(values["name"], []).append(values.get("value", ""))
            else:
                self.forms[-1].fields[values["name"]] = values.get("value", "")


def forms_of(html: str) -> list[Form]:
    """The forms of an HTML page."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class OAuthUser:
    """A user with a username and password and a cookie jar for one origin.

    ``pages`` keeps every response seen (for tests and the demo's report).
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.cookies: dict[str, str] = {}
        self.pages: list[httpx2.Response] = []

    def _send(self, http: httpx2.Client, method: str, url: str, data: dict[str, str] | None = None) -> httpx2.Response:
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if method == "POST":
            parts = urlsplit(url)
            headers["origin"] = f"{parts.scheme}://{parts.netloc}"
        response = http.request(method, url, data=data, headers=headers, follow_redirects=False)
        for raw in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        self.pages.append(response)
        return response

    def authorize(self, url: str, *, decision: str = "approve") -> str:
        """Open the authorization URL, sign in if asked, answer the consent page with ``decision``;
        returns the URL Bastion redirected to (the client's redirect URI with code or error).

        Raises ``RuntimeError`` with the page text when a page is not what a person expects.
        """
        with httpx2.Client(timeout=30.0) as http:
            response = self._send(http, "GET", url)
            for _ in range(_MAX_PAGES):
                if response.status_code in (302, 303):
                    return response.headers["location"]
                forms = forms_of(response.text)
                if response.status_code not in (200, 401) or len(forms) != 1:
                    raise RuntimeError(f"unexpected page {response.status_code}: {response.text[:500]}")
                form = forms[0]
                data = dict(form.fields)
                if "password" in data:
                    data.update(username=self.username, password=self.password)
                else:
                    data["decision"] = decision
                response = self._send(http, "POST", form.action, data)
        raise RuntimeError("too many pages before the redirect")


def query_of(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (single values)."""
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
