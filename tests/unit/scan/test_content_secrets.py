"""Secret detectors of ``bastion.scan.content`` (issue 15): each documented provider format, private keys,
JWTs, connection strings and keyed assignments are found with the span that is replaced; near misses
(hex digests, UUIDs, placeholders, counters named like secrets) are not."""

from __future__ import annotations

import uuid

import pytest
from content_samples import JWT, PEM, SECRETS, token

from bastion.scan.content import ALL_KINDS, RULES, detect, findings

SECRET_ONLY = frozenset({"secret"})


def _found(text: str) -> list[tuple[str, str]]:
    return [(d.rule, text[d.start : d.end]) for d in detect(text, SECRET_ONLY)]


@pytest.mark.parametrize("rule", sorted(SECRETS))
def test_each_secret_format_is_found_with_the_span_replaced(rule: str) -> None:
    text, part = SECRETS[rule]
    assert _found(text) == [(rule, part)]


def test_every_secret_rule_has_a_planted_sample() -> None:
    assert {r.id for r in RULES if r.kind == "secret"} <= set(SECRETS)


def test_only_the_credential_of_a_connection_string_or_header_is_replaced() -> None:
    assert _found("mongodb+srv://reader:pa55word@cluster0.example.net/db?retryWrites=true") == [
        ("url_password", "pa55word")
    ]
    assert _found("Server=tcp:db,1433;User ID=app;Password=Pa55w0rd!;Encrypt=true") == [("password", "Pa55w0rd!")]
    bearer = token(40)
    assert _found(f"curl -H 'Authorization: Bearer {bearer}' https://api") == [("bearer_token", bearer)]


def test_a_quoted_password_is_replaced_whole_even_with_spaces() -> None:
    assert _found('{"password": "correct horse battery staple", "user": "ann"}') == [
        ("password", "correct horse battery staple")
    ]


def test_a_keyed_value_in_a_known_format_is_reported_as_that_format() -> None:
    github = f"ghp_{token(36)}"
    assert _found(f"GITHUB_TOKEN={github}") == [("github_token", github)]


def test_a_truncated_private_key_is_replaced_to_the_end_of_the_text() -> None:
    text = "head\n" + PEM[:120]
    assert _found(text) == [("private_key", PEM[:120])]


def test_several_secrets_in_one_text_are_each_found_in_order() -> None:
    github = f"ghp_{token(36)}"
    text = f"a AKIAIOSFODNN7EXAMPLE b {JWT} c {github}"
    assert [rule for rule, _ in _found(text)] == ["aws_access_key", "jwt", "github_token"]


@pytest.mark.parametrize(
    "text",
    [
        str(uuid.UUID(int=0x6513270E269E0D37F2A74DE452E6B438)),  # a UUID
        "sha256 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",  # a digest
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",  # a git commit id
        "random hex " + "a3f9" * 10,  # high entropy, but no key and no format
        f"file id {token(44, seed=3)} (a Drive id: random base62, no key)",
        "akiaiosfodnn7example and AKIA1234",  # not an access key id: case, length
        f"ghp_{token(20)}",  # too short for a GitHub token
        "the risk-free rate and sk-learn",  # 'sk-' inside words
        '{"max_tokens": 1024, "token_type": "Bearer", "tokenizer": "cl100k"}',  # counters and names
        '{"session": "Morning keynote", "author": "Ann Smith"}',  # a secret-named key with a phrase
        "password: ********\napi_key: <your-api-key>\ntoken: ${GITHUB_TOKEN}\nsecret: null",  # placeholders
        '{"password_length": 12, "password": 123456}',  # numbers are left, as in structured content
        "https://user@example.com/path and https://example.com:8443/x?page=2",  # URLs without a password
        "Authorization: Bearer",  # a scheme and no credential
    ],
)
def test_near_misses_are_not_secrets(text: str) -> None:
    assert _found(text) == []


def test_findings_name_the_rule_and_never_repeat_the_value() -> None:
    text, part = SECRETS["github_token"]
    (finding,) = findings(text, ALL_KINDS, "/content/0/text")
    assert (finding.rule, finding.severity, finding.path) == ("github_token", "high", "/content/0/text")
    assert finding.excerpt == "[REDACTED:github_token]"
    assert part not in repr(finding)
