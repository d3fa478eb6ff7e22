"""Redaction of secrets in arguments: a table of positive and negative cases."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bastion.audit.redact import is_secret_key, redact

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.c2lnbmF0dXJlLXBhcnQ"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\nabc==\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    "key",
    [
        "password", "Password", "PASSWD", "db_password", "user-password", "passphrase", "secret",
        "client_secret", "clientSecret", "token", "access_token", "accessToken", "refresh-token",
        "api_key", "apiKey", "API-KEY", "X-Api-Key", "XAPIKey", "apikey", "aws_secret_access_key",
        "access_key", "private_key", "privateKey", "Authorization", "Proxy-Authorization", "cookie",
        "Set-Cookie", "session", "session_id", "sessionId", "credential", "credentials", "github.token",
    ],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens", "tokens", "tokenizer", "keyboard", "key", "path", "username", "user", "description",
        "passenger", "author", "authority", "sessions_count_limit_x", "monkey", "primary_key", "keys",
    ],
)  # fmt: skip
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer abcdefghijklmnopqrstuvwxyz0123", "[REDACTED:bearer]"),
        (f"Authorization: Bearer {JWT}", "Authorization: [REDACTED:bearer]"),
        (JWT, "[REDACTED:jwt]"),
        ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED:aws_access_key] here"),
        ("ASIAY34FZKBOKMUTVV7A", "[REDACTED:aws_access_key]"),
        ("ghp_" + "a1B2" * 9, "[REDACTED:github_token]"),
        ("gho_" + "Z" * 36, "[REDACTED:github_token]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[REDACTED:github_token]"),
        ("xoxb-1234567890-abcdefghij", "[REDACTED:slack_token]"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:stripe_key]"),
        ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "[REDACTED:google_api_key]"),
        (f"key:\n{PEM}\nend", "key:\n[REDACTED:private_key]\nend"),
        ("postgres://app:hunter2@db:5432/x", "postgres://app:[REDACTED:url_password]@db:5432/x"),
        (
            "https://h/cb?access_token=abc123&state=1",
            "https://h/cb?access_token=[REDACTED:secret_param]&state=1",
        ),
        ("Server=db;Password=hunter2;User=sa", "Server=db;Password=[REDACTED:secret_param];User=sa"),
        ("aws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws [REDACTED:high_entropy]"),
        ("tok Yo2B5tHoWeZk4eDhrvwFDAlQZ+hgBzR+yFmam9UJ", "tok [REDACTED:high_entropy]"),
    ],
)
def test_secret_values_are_replaced_whatever_the_key(text: str, expected: str) -> None:
    assert redact({"note": text}) == ({"note": expected}, 1)


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog",
        "Bearer tokens are described in RFC 6750",
        "Basic configuration",
        "550e8400-e29b-41d4-a716-446655440000",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "/home/alice/Projects2024/MyApp/src/Components/Button.tsx",
        "usr/lib/python3.11/site-packages/Django-4.2",
        "ThisIsAVeryLongCamelCaseIdentifierName2",
        "snake_case_function_name_v2_with_Many_words",
        "https://example.com:8443/api/v1/items?page=2&sort=name",
        "alice@example.com",
        "2026-05-09T07:35:25.123456Z",
        "max_tokens=512",
        "A" * 300 + "b1",  # data blobs longer than 256 characters are not credentials
        "[REDACTED:jwt]",
    ],
)
def test_ordinary_values_are_kept(text: str) -> None:
    assert redact({"note": text}) == ({"note": text}, 0)


def test_secret_key_replaces_every_string_below_it_but_keeps_numbers() -> None:
    value = {
        "credentials": {"user": "alice", "pin": 1234, "enabled": True, "list": ["a", ""]},
        "token_limit": 1000,
        "password": None,
    }
    redacted, count = redact(value)
    assert redacted == {
        "credentials": {
            "user": "[REDACTED:secret_field]",
            "pin": 1234,
            "enabled": True,
            "list": ["[REDACTED:secret_field]", ""],
        },
        "token_limit": 1000,
        "password": None,
    }
    assert count == 2


def test_recurses_through_lists_and_tuples_and_does_not_mutate() -> None:
    value: dict[str, Any] = {
        "items": [{"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, ("x", JWT)],
        "n": 1.5,
    }
    original = copy.deepcopy(value)
    redacted, count = redact(value)
    assert value == original
    assert redacted == {
        "items": [{"headers": {"Authorization": "[REDACTED:secret_field]"}}, ["x", "[REDACTED:jwt]"]],
        "n": 1.5,
    }
    assert count == 2


def test_redaction_is_idempotent() -> None:
    once, _ = redact({"api_key": "abc", "note": JWT})
    assert redact(once) == (once, 0)


@pytest.mark.parametrize("value", [None, 3, 2.5, True, "", "short"])
def test_scalars_pass_through(value: Any) -> None:
    assert redact(value) == (value, 0)
