"""``bastion.errors``: the one exception tree, and ``clip`` with the messages that quote client input.

The tree (STYLE.md 7): every error Bastion raises is a class of ``bastion.errors``, listed in
``__all__`` and drawn in the module docstring where its parent, HTTP status and JSON-RPC code
are the class's own; each has a stable audit ``code`` of its own, so no expected refusal is
recorded as the bug case ``internal_error``.

Every message Bastion builds from what a client sent (a method name, a header
value, a form field, a URL, a JWS header) quotes at most ``ECHO_LIMIT``
characters of it, so a 10,000-character name is not sent back whole.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable

import pytest

import bastion
from bastion import errors
from bastion.egress.target import parse_target
from bastion.errors import ECHO_LIMIT, AuthenticationError, BastionError, EgressDenied, OAuthError, clip
from bastion.identity.signature import verify_compact_jws
from bastion.oauth.clients import registration_metadata
from bastion.oauth.requests import requested_scopes, single_params
from bastion.transport.checks import protocol_era

LONG = "q" * 10_000
#: A JWS alg about as long as joserfc lets through (it refuses an encoded header over 512 bytes).
LONG_ALG = "q" * 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("tools/call", "tools/call"),
        ("a" * ECHO_LIMIT, "a" * ECHO_LIMIT),
        ("a" * (ECHO_LIMIT + 1), "a" * ECHO_LIMIT + "…(1 more character)"),
        (LONG, "q" * ECHO_LIMIT + "…(9800 more characters)"),
        ("😀" * 201, "😀" * 200 + "…(1 more character)"),  # counted in code points, never split
    ],
)
def test_clip_keeps_at_most_the_limit_and_says_how_much_is_left_out(text: str, expected: str) -> None:
    assert clip(text) == expected


def test_clip_takes_another_limit() -> None:
    assert clip("abcdef", 3) == "abc…(3 more characters)"


def _jws_with_alg(alg: str) -> str:
    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([segment(json.dumps({"alg": alg}).encode()), segment(b"{}"), segment(b"sig")])


def _raise_egress() -> None:
    parse_target(LONG + "://example.com/", allow_http=False)


def _raise_bad_port() -> None:
    parse_target("https://example.com:" + LONG + "/", allow_http=False)


SITES: dict[str, Callable[[], object]] = {
    "MCP-Protocol-Version header": lambda: protocol_era({"mcp-protocol-version": LONG}, {"method": "tools/list"}),
    "OAuth scope": lambda: requested_scopes(LONG, ["mcp"], default=["mcp"]),
    "repeated OAuth parameter": lambda: single_params([(LONG, "a"), (LONG, "b")]),
    "URL scheme of a URL argument": _raise_egress,
    "unreadable port of a URL argument": _raise_bad_port,
    "client's token_endpoint_auth_method": lambda: registration_metadata(
        {"redirect_uris": ["https://client.example/cb"], "token_endpoint_auth_method": LONG}
    ),
    "JWS alg": lambda: verify_compact_jws(_jws_with_alg(LONG_ALG), lambda _: None, ["ES256"]),  # type: ignore[arg-type,return-value]
}


@pytest.mark.parametrize("site", SITES)
def test_a_message_built_from_10000_characters_of_client_input_quotes_at_most_the_limit(site: str) -> None:
    with pytest.raises((AuthenticationError, EgressDenied, OAuthError, BastionError)) as caught:
        SITES[site]()
    error = caught.value
    text = error.description if isinstance(error, OAuthError) else error.message
    assert "q" * 100 in text  # the start is quoted...
    assert "more characters)" in text
    assert len(text) < ECHO_LIMIT + 150  # ...the rest is not


# --- the one tree -----------------------------------------------------------------------------

#: Exception classes that live outside ``bastion.errors`` on purpose (the errors docstring says why).
FOREIGN_ADAPTERS = {
    "bastion.audit.canonical.NotCanonicalizable",  # a TypeError the audit stage maps to AuditUnavailable
    "bastion.policy.testing._CaseError",  # private to the policy test runner
    "bastion.audit.export.SinkUnavailable",  # an export destination's refusal, retried by the exporter
}

_BRANCH = re.compile(r"^    (?P<indent>(?:│   |    )*)[├└]── (?P<name>\w+)(?P<rest>.*)$")
_NUMBERS = re.compile(r"^\s+(?P<status>\d{3})(?:\s+(?P<jsonrpc>-\d{5})\b)?")


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined at the top level of a module of the ``bastion`` package,
    by its dotted name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(bastion.__path__, "bastion."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def _tree_classes() -> list[type[errors.BastionError]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.BastionError) and value.__module__ == errors.__name__
    ]


def _drawn_tree() -> dict[str, tuple[str, str]]:
    """``{class name: (parent name, rest of the line)}`` from the tree in the module docstring."""
    doc = errors.__doc__ or ""
    assert "\n    BastionError\n" in doc
    drawn: dict[str, tuple[str, str]] = {}
    parents = ["BastionError"]
    for line in doc.split("\n    BastionError\n", 1)[1].splitlines():
        branch = _BRANCH.match(line)
        if branch is None:
            break
        depth = len(branch["indent"]) // 4 + 1
        assert depth <= len(parents), f"{branch['name']} is drawn deeper than its parent"
        del parents[depth:]
        assert branch["name"] not in drawn, f"{branch['name']} is drawn twice"
        drawn[branch["name"]] = (parents[depth - 1], branch["rest"])
        parents.append(branch["name"])
    return drawn


def test_every_error_bastion_raises_is_defined_in_bastion_errors() -> None:
    found = _exception_classes()
    outside = sorted(name for name in found if not name.startswith("bastion.errors.") and name not in FOREIGN_ADAPTERS)
    assert outside == [], "define these in bastion.errors (or map them there and say why in its docstring)"
    assert found.keys() >= FOREIGN_ADAPTERS, "a foreign adapter moved or went: update the list and the docstring"
    for name in FOREIGN_ADAPTERS:
        assert not issubclass(found[name], errors.BastionError)
        assert name.rsplit(".", 1)[1] in (errors.__doc__ or ""), f"the errors docstring does not say why {name} stays"


def test_each_error_has_its_own_stable_code() -> None:
    """Wherever a ``BastionError`` is defined: one audit code per class, ``internal_error`` only for the base."""
    classes = [cls for cls in _exception_classes().values() if issubclass(cls, errors.BastionError)]
    codes = [cls.code for cls in classes]
    assert len(set(codes)) == len(codes), sorted(code for code in codes if codes.count(code) > 1)
    for cls in classes:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls.__name__
        assert (cls.code == "internal_error") is (cls is errors.BastionError), cls.__name__
        assert 200 <= cls.status <= 599, cls.__name__
        assert isinstance(cls.jsonrpc_code, int), cls.__name__


def test_the_drawn_tree_is_the_tree() -> None:
    """Every class is drawn under its own parent, with its own status and JSON-RPC code where
    the drawing gives them, and is in ``__all__``."""
    classes = {cls.__name__: cls for cls in _tree_classes()}
    drawn = _drawn_tree()
    assert sorted(drawn) == sorted(set(classes) - {"BastionError"})
    for name, (parent, rest) in drawn.items():
        cls = classes[name]
        assert cls.__bases__ == (classes[parent],), f"{name} is drawn under {parent}"
        numbers = _NUMBERS.match(rest)
        if numbers is not None:
            assert int(numbers["status"]) == cls.status, name
            if numbers["jsonrpc"] is not None:
                assert int(numbers["jsonrpc"]) == cls.jsonrpc_code, name
    assert set(classes) <= set(errors.__all__)
