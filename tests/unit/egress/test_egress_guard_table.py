"""Every forbidden destination, in every encoding, refused on both guarded paths and audited.

One table, two clients: the egress guard's own ``fetch`` (httpx2) and the upstream client
``HttpUpstream`` (its connections opened by ``bastion.upstream.connections``). Each case must be refused with an error
naming the address and the reason, without a connection, and leave exactly one ``egress/connect``
deny record in a real SQLite audit log, with the shown URL, purpose, reason and hop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from egress_cases import StaticResolver
from egress_origin import Origin

from bastion.audit import SQLiteAuditLog, iter_events, verify
from bastion.egress import AllowList, EgressGuard, audit_refusals
from bastion.errors import EgressDenied
from bastion.upstream.http import HttpUpstream

#: (case id, URL host, what the refusal says): every spelling of a destination the guard refuses.
TABLE = [
    ("ipv4-decimal", "2130706433", "127.0.0.1 is a loopback address"),
    ("ipv4-octal", "0177.0.0.1", "127.0.0.1 is a loopback address"),
    ("ipv4-hex", "0x7f.0.0.1", "127.0.0.1 is a loopback address"),
    ("ipv4-short", "127.1", "127.0.0.1 is a loopback address"),
    ("ipv4-short-hex", "0x7f.1", "127.0.0.1 is a loopback address"),
    ("ipv4-mapped", "[::ffff:127.0.0.1]", "::ffff:7f00:1 is a loopback address"),
    ("nat64", "[64:ff9b::7f00:1]", "64:ff9b::7f00:1 is a loopback address"),
    ("unspecified-v4", "0.0.0.0", "0.0.0.0 is an unspecified address"),  # noqa: S104 (refused, nothing binds)
    ("unspecified-v6", "[::]", ":: is an unspecified address"),
    ("loopback-v6", "[::1]", "::1 is a loopback address"),
    ("private-10", "10.20.30.40", "10.20.30.40 is a private address"),
    ("private-172-16", "172.16.0.1", "172.16.0.1 is a private address"),
    ("private-172-31", "172.31.255.254", "172.31.255.254 is a private address"),
    ("private-192-168", "192.168.1.1", "192.168.1.1 is a private address"),
    ("cgnat", "100.64.0.1", "100.64.0.1 is a carrier-grade NAT address"),
    ("metadata-v4", "169.254.169.254", "169.254.169.254 is a cloud metadata address"),
    ("metadata-v6", "[fd00:ec2::254]", "fd00:ec2::254 is a cloud metadata address"),
    ("metadata-name", "metadata.google.internal", "metadata.google.internal resolves to 169.254.169.254, a cloud"),
    ("multicast-v4", "224.0.0.1", "224.0.0.1 is a multicast address"),
    ("multicast-v6", "[ff02::1]", "ff02::1 is a multicast address"),
    ("reserved", "240.0.0.1", "240.0.0.1 is a reserved address"),
    ("benchmarking", "198.18.0.1", "198.18.0.1 is a benchmarking address"),
    ("link-local-v6", "[fe80::1]", "fe80::1 is a link-local address"),
    ("unique-local", "[fc00::1]", "fc00::1 is a unique local address"),
    ("name-to-private", "evil.example", "evil.example resolves to 10.0.0.7, a private address"),
]
CASES = [pytest.param(host, says, id=case) for case, host, says in TABLE]
#: What the test resolver answers; any other name does not resolve.
ANSWERS = {"metadata.google.internal": ["169.254.169.254"], "evil.example": ["10.0.0.7"], "localhost": ["127.0.0.1"]}


def _url(host: str, path: str = "/mcp?token=s3cret") -> str:
    return f"https://{host}:8443{path}"


def _shown(host: str) -> str:
    return f"https://{host}:8443/mcp"


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bastion.db"


@pytest.fixture
async def audit_log(audit_path: Path) -> AsyncIterator[SQLiteAuditLog]:
    async with SQLiteAuditLog(audit_path, synchronous="normal") as log:
        yield log


@pytest.fixture
async def audited_guard(audit_log: SQLiteAuditLog) -> AsyncIterator[EgressGuard]:
    """A guard with no exceptions beyond public addresses, reporting to the audit log."""
    async with EgressGuard(resolver=StaticResolver(ANSWERS), on_refusal=audit_refusals(audit_log)) as guard:
        yield guard


@pytest.fixture
def no_upstream_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the upstream client gets as far as opening a socket (these tests run on
    asyncio's own event loop, whose ``create_connection`` every connection goes through)."""

    async def tripwire(*_args: Any, **_kwargs: Any) -> Any:
        pytest.fail("the upstream client tried to connect")

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", tripwire)


def _refusal_records(path: Path) -> list[dict[str, Any]]:
    return [record for record in iter_events(path) if record["method"] == "egress/connect"]


def assert_audited(path: Path, *, url: str, purpose: str, says: str, hop: int = 0) -> None:
    """Exactly one egress refusal record, with the shown URL (no query), the purpose, the reason, the hop."""
    [record] = _refusal_records(path)
    assert record["kind"] == "decision"
    assert record["route"] == "-"
    assert record["target"] == url
    assert record["decision"]["effect"] == "deny"
    assert record["decision"]["reason"] == "egress_denied"
    arguments = record["arguments"]
    assert set(arguments) == {"url", "purpose", "reason", "hop"}
    assert (arguments["url"], arguments["purpose"], arguments["hop"]) == (url, purpose, hop)
    assert says in arguments["reason"]
    assert "s3cret" not in str(record)
    assert verify(path).ok


@pytest.mark.usefixtures("no_connections")
@pytest.mark.parametrize(("host", "says"), CASES)
async def test_fetch_refuses_and_audits(audited_guard: EgressGuard, audit_path: Path, host: str, says: str) -> None:
    with pytest.raises(EgressDenied, match=re.escape(says)) as caught:
        await audited_guard.fetch(_url(host), max_bytes=1024, timeout_s=5, purpose="client_metadata")
    assert "s3cret" not in caught.value.message
    assert_audited(audit_path, url=_shown(host), purpose="client_metadata", says=says)


@pytest.mark.usefixtures("no_upstream_connections")
@pytest.mark.parametrize(("host", "says"), CASES)
async def test_the_upstream_client_refuses_and_audits(
    audited_guard: EgressGuard, audit_path: Path, host: str, says: str
) -> None:
    upstream = HttpUpstream(_url(host), guard=audited_guard)
    try:
        with pytest.raises(EgressDenied, match=re.escape(says)) as caught:
            await upstream.send("POST", headers={"content-type": "application/json"}, body=b"{}")
    finally:
        await upstream.aclose()
    assert caught.value.message.startswith("the egress guard refused the upstream: ")
    assert (caught.value.status, caught.value.jsonrpc_code, caught.value.code) == (403, -32003, "egress_denied")
    assert_audited(audit_path, url=_shown(host), purpose="upstream", says=says)


# --- redirects from an allowed origin -----------------------------------------------------------


@pytest.fixture
async def allowed_origin_guard(plain_origin: Origin, audit_log: SQLiteAuditLog) -> AsyncIterator[EgressGuard]:
    """A guard that allows exactly the plain origin (127.0.0.1 on its port), reporting to the audit log."""
    allow = AllowList.parse([f"127.0.0.1:{plain_origin.port}"])
    resolver = StaticResolver(ANSWERS)
    async with EgressGuard(allow=allow, resolver=resolver, on_refusal=audit_refusals(audit_log)) as guard:
        yield guard


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        # The allowed entry is 127.0.0.1 on one port, not the IPv4-mapped spelling of it.
        ("http://[::ffff:127.0.0.1]:{port}/doc", "::ffff:7f00:1 is a loopback address"),
        ("http://localhost:{port}/doc", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://evil.example/", "evil.example resolves to 10.0.0.7, a private address"),
    ],
    ids=["metadata", "mapped-loopback-same-port", "name-to-loopback", "name-to-private"],
)
async def test_a_redirect_from_an_allowed_origin_to_a_forbidden_address_is_refused_and_audited(
    allowed_origin_guard: EgressGuard, plain_origin: Origin, audit_path: Path, location: str, says: str
) -> None:
    target = location.format(port=plain_origin.port)
    start = plain_origin.url(f"/redirect?to={quote(target, safe='')}", host="127.0.0.1")
    with pytest.raises(EgressDenied, match=re.escape(says)) as caught:
        await allowed_origin_guard.fetch(start, max_bytes=1024, timeout_s=5, allow_http=True, purpose="jwks")
    assert caught.value.message.startswith("redirect to ")
    assert len(plain_origin.requests) == 1  # the allowed origin was fetched, the redirect target never
    assert_audited(audit_path, url=target, purpose="jwks", says=says, hop=1)


async def test_the_allowed_origin_itself_is_fetched_without_a_record(
    allowed_origin_guard: EgressGuard, plain_origin: Origin, audit_path: Path
) -> None:
    result = await allowed_origin_guard.fetch(
        plain_origin.url("/doc", host="127.0.0.1"), max_bytes=1024, timeout_s=5, allow_http=True
    )
    assert result.status == 200
    assert _refusal_records(audit_path) == []


# --- an audit log that cannot write -------------------------------------------------------------


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.ERROR, logger="bastion.egress"):
        yield caplog


@pytest.mark.usefixtures("no_connections", "no_upstream_connections")
async def test_a_refusal_stands_when_the_audit_log_cannot_write(
    tmp_path: Path, errors: pytest.LogCaptureFixture
) -> None:
    stopped = SQLiteAuditLog(tmp_path / "never-started.db")  # append raises AuditUnavailable
    async with EgressGuard(resolver=StaticResolver(ANSWERS), on_refusal=audit_refusals(stopped)) as guard:
        with pytest.raises(EgressDenied, match="cloud metadata"):
            await guard.fetch(_url("169.254.169.254"), max_bytes=1024, timeout_s=5)
        upstream = HttpUpstream(_url("evil.example"), guard=guard)
        try:
            with pytest.raises(EgressDenied, match="a private address"):
                await upstream.send("POST", headers={}, body=b"{}")
        finally:
            await upstream.aclose()
    messages = [record.getMessage() for record in errors.records]
    assert len(messages) == 2
    assert all("was not recorded" in message and "s3cret" not in message for message in messages)


# --- what each call reports ----------------------------------------------------------------------


@pytest.mark.usefixtures("no_connections")
async def test_each_call_reports_with_its_default_purpose(audited_guard: EgressGuard, audit_path: Path) -> None:
    url = _url("10.0.0.1")
    with pytest.raises(EgressDenied):
        await audited_guard.fetch(url, max_bytes=1024, timeout_s=5)
    with pytest.raises(EgressDenied):
        await audited_guard.send("POST", url, max_bytes=1024, timeout_s=5, body=b"code=s3cret")
    with pytest.raises(EgressDenied):
        await audited_guard.check(url, allow_http=False)
    with pytest.raises(EgressDenied):
        await audited_guard.checked_addresses("10.0.0.1", 8443, url=url)
    with pytest.raises(EgressDenied, match="URL scheme 'ftp'"):
        await audited_guard.fetch("ftp://user:pw@files.example/x?token=s3cret", max_bytes=1024, timeout_s=5)
    records = _refusal_records(audit_path)
    assert [r["arguments"]["purpose"] for r in records] == ["fetch", "send", "url_argument", "upstream", "fetch"]
    assert [r["target"] for r in records] == [_shown("10.0.0.1")] * 4 + ["ftp://files.example/x"]
    assert "s3cret" not in str(records)
    assert "pw" not in records[-1]["target"]


async def test_the_redirect_limit_is_reported_at_the_hop_that_exceeds_it(
    plain_origin: Origin, audit_log: SQLiteAuditLog, audit_path: Path
) -> None:
    allow = AllowList.parse(["127.0.0.1/32"])
    async with EgressGuard(allow=allow, max_redirects=2, on_refusal=audit_refusals(audit_log)) as guard:
        with pytest.raises(EgressDenied, match="redirects again after 2 redirects"):
            await guard.fetch(plain_origin.url("/loop", host="127.0.0.1"), max_bytes=1024, timeout_s=5, allow_http=True)
    assert_audited(audit_path, url=plain_origin.url("/loop", host="127.0.0.1"), purpose="fetch", says="again", hop=2)
