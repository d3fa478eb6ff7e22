"""The sign-in, consent and error pages: escaping, security headers, the CSP style hash, form fields, cookies."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from starlette.responses import HTMLResponse, Response

from bastion.oauth.pages import clear_cookie, consent_page, error_page, set_cookie, sign_in_page

XSS = "<script>alert(1)</script>"


class Page(HTMLParser):
    """What the tests look at in a rendered page, collected with the stdlib parser."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self.title = ""
        self.h1 = ""
        self._in: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in {"meta", "input", "br", "link"}:
            self._in.append(tag)
        if tag == "style":
            self.styles.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        current = self._in[-1] if self._in else ""
        if current == "style":
            self.styles[-1] += data
        elif current == "title":
            self.title += data
        else:
            self.text.append(data)
            if "h1" in self._in:
                self.h1 += data

    @property
    def body_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def fields(self) -> dict[str, str | None]:
        return {str(a["name"]): a.get("value") for t, a in self.tags if t in {"input", "button"} and "name" in a}


def sign_in(**overrides: object) -> HTMLResponse:
    args: dict[str, object] = {
        "action": "/oauth/sign-in", "transaction": "tx-1", "csrf_token": "csrf-1", "client_name": "Claude",
    } | overrides  # fmt: skip
    return sign_in_page(**args)  # type: ignore[arg-type]


def consent(**overrides: object) -> HTMLResponse:
    args: dict[str, object] = {
        "action": "/oauth/consent", "transaction": "tx-2", "csrf_token": "csrf-2", "client_name": "Claude",
        "client_id": "https://claude.ai/oauth/client.json", "redirect_host": "claude.ai", "resource_name": "git",
        "resource_uri": "https://gw.example/mcp/git", "scopes": ["mcp:tools", "mcp:resources"],
        "user_label": "alice@example.com", "unverified_client": False,
    } | overrides  # fmt: skip
    return consent_page(**args)  # type: ignore[arg-type]


def error() -> HTMLResponse:
    return error_page(title="Unknown client", message="The client_id is not registered.", status_code=400)


PAGES: dict[str, Callable[[], HTMLResponse]] = {"sign-in": sign_in, "consent": consent, "error": error}


def parse(response: Response) -> Page:
    return Page(bytes(response.body).decode("utf-8"))


def csp_directives(response: Response) -> dict[str, str]:
    directives = (d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


@pytest.mark.parametrize("make", PAGES.values(), ids=PAGES.keys())
def test_every_page_sets_the_security_headers(make: Callable[[], HTMLResponse]) -> None:
    response = make()
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = csp_directives(response)
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["img-src"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert csp["form-action"] == "'self'"
    assert "script-src" not in csp


@pytest.mark.parametrize("make", PAGES.values(), ids=PAGES.keys())
def test_csp_style_hash_matches_the_inline_style_block(make: Callable[[], HTMLResponse]) -> None:
    response = make()
    page = parse(response)
    assert len(page.styles) == 1
    digest = base64.b64encode(hashlib.sha256(page.styles[0].encode("utf-8")).digest()).decode("ascii")
    assert csp_directives(response)["style-src"] == f"'sha256-{digest}'"


@pytest.mark.parametrize("make", PAGES.values(), ids=PAGES.keys())
def test_pages_are_accessible_and_self_contained(make: Callable[[], HTMLResponse]) -> None:
    page = parse(make())
    assert page.find("html", lang="en")
    assert page.find("meta", name="viewport")
    assert page.h1.strip() == page.title.strip() != ""
    assert not page.find("script")
    assert not page.find("img")
    assert not page.find("link")
    for _, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), attrs  # no inline event handlers
        assert "style" not in attrs  # inline style attributes would need 'unsafe-inline'


def test_form_action_origins_are_added_to_the_csp() -> None:
    response = consent(form_action=["https://claude.ai", "http://127.0.0.1:33418", "vscode:"])
    assert csp_directives(response)["form-action"] == "'self' https://claude.ai http://127.0.0.1:33418 vscode:"


@pytest.mark.parametrize(
    "origin", ["https://a.example; script-src *", "https://a.example/path", "'unsafe-inline'", "", "https://a b"]
)
def test_a_form_action_that_is_not_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="form_action"):
        consent(form_action=[origin])


@pytest.mark.parametrize("url", ["javascript:alert(1)", "//evil.example/x", "data:text/html,x", "sign-in"])
def test_links_that_are_not_paths_or_http_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="neither a path nor an http"):
        sign_in(action=url)
    with pytest.raises(ValueError, match="providers"):
        sign_in(providers=[("Evil", url)])


def test_sign_in_page_fields() -> None:
    response = sign_in(username="alice")
    page = parse(response)
    assert response.status_code == 200
    assert page.title == "Sign in to Bastion"
    (form,) = page.find("form")
    assert form == {"method": "post", "action": "/oauth/sign-in"}
    assert page.find("input", type="hidden", name="transaction", value="tx-1")
    assert page.find("input", type="hidden", name="csrf_token", value="csrf-1")
    assert page.find("input", type="text", name="username", value="alice", id="username")
    (password,) = page.find("input", type="password", name="password", id="password")
    assert "value" not in password  # a password is never echoed back
    assert page.find("label", **{"for": "username"})
    assert page.find("label", **{"for": "password"})
    assert page.find("button", type="submit")
    assert "Claude" in page.body_text


def test_sign_in_error_and_status() -> None:
    response = sign_in(error="Wrong username or password.", status_code=401)
    page = parse(response)
    assert response.status_code == 401
    assert page.find("div", role="alert")
    assert "Wrong username or password." in page.body_text


def test_sign_in_with_providers_only() -> None:
    page = parse(sign_in(providers=[("Okta", "https://gw.example/oauth/upstream/okta?tx=1")], password_form=False))
    assert not page.find("form")
    assert page.find("a", href="https://gw.example/oauth/upstream/okta?tx=1")
    assert "Sign in with Okta" in page.body_text


def test_sign_in_with_providers_and_password_form() -> None:
    page = parse(sign_in(providers=[("Okta", "/oauth/upstream/okta"), ("Google", "/oauth/upstream/google")]))
    assert [a["href"] for a in page.find("a")] == ["/oauth/upstream/okta", "/oauth/upstream/google"]
    assert page.find("form")


def test_sign_in_with_no_method_says_so() -> None:
    page = parse(sign_in(password_form=False))
    assert not page.find("form")
    assert "No sign-in method is configured." in page.body_text


def test_consent_page_shows_what_is_being_allowed() -> None:
    page = parse(consent())
    assert page.title == "Allow Claude to use git?"
    text = page.body_text
    assert "After you approve, you will be sent to claude.ai" in text
    assert "https://claude.ai/oauth/client.json" in text
    assert "https://gw.example/mcp/git" in text
    assert "mcp:tools" in text
    assert "mcp:resources" in text
    assert "alice@example.com" in text


def test_consent_form_has_both_decisions_and_the_hidden_fields() -> None:
    page = parse(consent())
    (form,) = page.find("form")
    assert form == {"method": "post", "action": "/oauth/consent"}
    assert page.find("input", type="hidden", name="transaction", value="tx-2")
    assert page.find("input", type="hidden", name="csrf_token", value="csrf-2")
    decisions = [b["value"] for b in page.find("button", type="submit", name="decision")]
    assert sorted(decisions) == ["approve", "deny"]  # type: ignore[type-var]
    assert decisions[0] == "deny"  # Enter submits the first button: never an accidental approval


def test_unverified_warning_only_when_asked() -> None:
    assert not parse(consent()).find("div", role="alert")
    page = parse(consent(unverified_client=True))
    assert page.find("div", role="alert")
    assert "Bastion has not verified this application." in page.body_text


def test_no_scopes_is_said_plainly() -> None:
    assert "No scopes requested" in parse(consent(scopes=[])).body_text


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(
            lambda: consent(client_name=XSS, resource_name=XSS, redirect_host=XSS, user_label=XSS), id="consent"
        ),
        pytest.param(lambda: sign_in(client_name=XSS, username=XSS, error=XSS), id="sign-in"),
        pytest.param(lambda: error_page(title=XSS, message=XSS, status_code=400), id="error"),
    ],
)
def test_values_are_autoescaped(response: Callable[[], HTMLResponse]) -> None:
    html = bytes(response().body).decode("utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Page(html)
    assert not page.find("script")
    assert XSS in page.body_text or XSS in page.title


def test_hidden_fields_are_attribute_escaped() -> None:
    page = parse(sign_in(transaction='"><script>alert(1)</script>', csrf_token="a&b"))
    assert page.find("input", name="transaction", value='"><script>alert(1)</script>')
    assert page.find("input", name="csrf_token", value="a&b")
    assert not page.find("script")


def test_error_page() -> None:
    response = error()
    page = parse(response)
    assert response.status_code == 400
    assert page.title == "Unknown client"
    assert "The client_id is not registered." in page.body_text
    assert not page.find("form")


def cookie_attributes(response: Response) -> tuple[str, set[str]]:
    (header,) = response.headers.getlist("set-cookie")
    first, *rest = (part.strip() for part in header.split(";"))
    return first, {part.lower() for part in rest}


def test_set_cookie_is_host_prefixed_secure_httponly_lax() -> None:
    response = Response()
    set_cookie(response, "__Host-bastion-session", "abc123", max_age_s=600)
    first, attributes = cookie_attributes(response)
    assert first == "__Host-bastion-session=abc123"
    assert {"secure", "httponly", "samesite=lax", "path=/", "max-age=600"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)


def test_clear_cookie_expires_it_with_the_same_attributes() -> None:
    response = Response()
    clear_cookie(response, "__Host-bastion-session")
    first, attributes = cookie_attributes(response)
    assert first == '__Host-bastion-session=""'
    assert {"secure", "httponly", "samesite=lax", "path=/", "max-age=0"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)


def test_cookie_names_without_the_host_prefix_are_refused() -> None:
    with pytest.raises(ValueError, match="__Host-"):
        set_cookie(Response(), "session", "x", max_age_s=60)
    with pytest.raises(ValueError, match="__Host-"):
        clear_cookie(Response(), "__Secure-session")
    with pytest.raises(ValueError, match="Path=/"):
        set_cookie(Response(), "__Host-session", "x", max_age_s=60, path="/oauth")
