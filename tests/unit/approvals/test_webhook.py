"""The approval webhook: a Slack-compatible body, the HMAC signature, delivery through the egress guard.

Delivery tests post to a real HTTPS receiver on 127.0.0.1 (a throwaway CA from
``tests/support/pki``; the guard trusts it through ``ca_file``) that checks every signature
with ``verify`` and records what it got. Nothing on the HTTP path is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace

import pytest
from tests.support.pki import Leaf, Pki, make_pki

from bastion.approvals.model import ApprovalBinding, ApprovalRequest
from bastion.approvals.webhook import WebhookAttempt, WebhookNotifier, sign, verify, webhook_body
from bastion.egress import AllowList, EgressGuard, Refusal

SECRET = b"webhook-test-secret"
LINK = "https://bastion.example/approvals/apr_1?view=full&x=1"
TITLE = "Bastion approval request"
LOOPBACK = AllowList.parse(["127.0.0.1"])
ARGUMENT_SENTINEL = "sentinel-argument-value-7f3a"


def _request(tool: str = "deploy") -> ApprovalRequest:
    return ApprovalRequest(
        id="apr_1",
        kind="review",
        binding=ApprovalBinding("https://idp.example|alice", "prod", tool, "ab" * 32, "policy-v1"),
        requester_label="alice@example.com",
        client_id="https://client.example/metadata.json",
        arguments={"target": "prod-db", "token": ARGUMENT_SENTINEL},
        risk="high",
        classification="confidential",
        policy_ids=("needs-review",),
        decision_id="dec_1",
        created_at=1767225600.0,
        expires_at=1767229200.0,
    )


@dataclass(frozen=True)
class Received:
    """One POST the receiver got: head fields (lowercase names), raw body, whether ``verify`` passed."""

    headers: dict[str, str]
    body: bytes
    valid: bool


class Receiver:
    """A webhook receiver over HTTPS on 127.0.0.1: answers each request with the next of ``statuses``
    (200 once they run out) after ``delay_s`` seconds; checks signatures with ``verify`` and ``SECRET``."""

    def __init__(self, leaf: Leaf, statuses: Iterable[int] = (), delay_s: float = 0.0) -> None:
        self.received: list[Received] = []
        self.got_request = asyncio.Event()
        self._statuses = list(statuses)
        self._delay_s = delay_s
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(leaf.certfile, leaf.keyfile)
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hooks/approvals"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            _, *fields = head.decode("latin-1").split("\r\n")
            headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields if f)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            valid = verify(
                SECRET,
                int(headers["x-bastion-request-timestamp"]),
                body,
                headers["x-bastion-signature"],
                now=time.time(),
            )
            self.received.append(Received(headers, body, valid))
            self.got_request.set()
            await asyncio.sleep(self._delay_s)
            status = self._statuses.pop(0) if self._statuses else 200
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            # Not re-raised: asyncio 3.11 logs an error for a connection handler that ends cancelled.
            writer.transport.abort()
        finally:
            self._handlers.discard(task)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture
def refusals() -> list[Refusal]:
    return []


@pytest.fixture
async def guard(pki: Pki, refusals: list[Refusal]) -> AsyncIterator[EgressGuard]:
    """A guard that trusts the test CA; its own allow list is empty (loopback refused)."""

    async def record(refusal: Refusal) -> None:
        refusals.append(refusal)

    async with EgressGuard(ca_file=pki.ca_file, on_refusal=record) as guard:
        yield guard


class Attempts(list[WebhookAttempt]):
    """An ``on_attempt`` hook that records what it is given."""

    async def __call__(self, attempt: WebhookAttempt) -> None:
        self.append(attempt)


async def _delivered(notifier: WebhookNotifier, request: ApprovalRequest | None = None) -> None:
    notifier.notify(request or _request(), LINK, TITLE)
    await notifier.drain()


# The body


def test_the_body_is_compact_slack_json_with_the_link_and_never_the_arguments() -> None:
    body = webhook_body(_request(), LINK, title=TITLE)
    message = json.loads(body)
    assert body == json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    escaped_link = LINK.replace("&", "&amp;")
    assert message["text"] == (
        f"{TITLE}: alice@example.com asks to call deploy on prod (risk high); review: {escaped_link}"
    )
    [block] = message["blocks"]
    assert block["type"] == "section"
    assert block["text"]["type"] == "mrkdwn"
    assert block["text"]["text"].split("\n") == [
        f"*{TITLE}*",
        "*Requester:* alice@example.com",
        "*Client:* https://client.example/metadata.json",
        "*Route:* prod",
        "*Tool:* deploy",
        "*Risk:* high",
        "*Classification:* confidential",
        "*Approval:* apr_1",
        "*Expires:* 2026-01-01T01:00:00Z",
        f"<{escaped_link}|Review>",
    ]
    assert message["approval"] == {
        "id": "apr_1",
        "kind": "review",
        "route": "prod",
        "tool": "deploy",
        "requester": "alice@example.com",
        "risk": "high",
        "classification": "confidential",
        "expires_at": "2026-01-01T01:00:00Z",
        "url": LINK,
    }
    assert ARGUMENT_SENTINEL.encode() not in body
    assert b"prod-db" not in body


def test_outside_values_cannot_ping_a_channel_forge_a_link_or_add_a_line() -> None:
    tool = "<!channel> & <https://evil.example|click>\n*Approval:* forged"
    message = json.loads(webhook_body(_request(tool), LINK, title=TITLE))
    shown = "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt; *Approval:* forged"
    assert f"asks to call {shown} on prod" in message["text"]
    lines = message["blocks"][0]["text"]["text"].split("\n")
    assert f"*Tool:* {shown}" in lines
    assert len(lines) == 10
    for text in (message["text"], message["blocks"][0]["text"]["text"]):
        assert "<!channel>" not in text
        assert "<https://evil.example" not in text
    assert message["approval"]["tool"] == tool


def test_a_long_outside_value_is_cut_in_the_message_but_not_in_the_approval_object() -> None:
    tool = "t" * 1000
    message = json.loads(webhook_body(_request(tool), LINK, title=TITLE))
    assert f"*Tool:* {'t' * 199}\u2026" in message["blocks"][0]["text"]["text"].split("\n")
    assert message["approval"]["tool"] == tool


def test_a_confirm_request_asks_to_confirm() -> None:
    confirm = replace(_request(), kind="confirm")
    message = json.loads(webhook_body(confirm, LINK, title=TITLE))
    assert message["text"].endswith("; confirm: " + LINK.replace("&", "&amp;"))
    assert message["approval"]["kind"] == "confirm"


# The signature


def test_the_signature_is_hmac_sha256_over_version_timestamp_and_body() -> None:
    body = b'{"text":"hi"}'
    expected = hmac.new(SECRET, b"v1:1767225600:" + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1767225600, body) == "v1=" + expected


def test_verify_accepts_a_fresh_signature_and_refuses_wrong_secret_tampering_and_stale_timestamps() -> None:
    body, timestamp = webhook_body(_request(), LINK, title=TITLE), 1767225600
    signature = sign(SECRET, timestamp, body)
    assert verify(SECRET, timestamp, body, signature, now=timestamp + 1.5)
    assert verify(SECRET, timestamp, body, signature, now=timestamp + 300)
    assert not verify(b"another-secret", timestamp, body, signature, now=timestamp)
    assert not verify(SECRET, timestamp, body + b" ", signature, now=timestamp)
    assert not verify(SECRET, timestamp + 1, body, signature, now=timestamp)
    assert not verify(SECRET, timestamp, body, signature, now=timestamp + 301)
    assert not verify(SECRET, timestamp, body, signature, now=timestamp - 301)
    assert not verify(SECRET, timestamp, body, signature, now=timestamp + 61, tolerance_s=60)
    assert not verify(SECRET, timestamp, body, signature.replace("v1=", "v2="), now=timestamp)
    assert not verify(SECRET, timestamp, body, "v1=\u00e9" + signature[4:], now=timestamp)


# Delivery


async def test_a_notification_is_delivered_once_signed_with_the_slack_body(pki: Pki, guard: EgressGuard) -> None:
    attempts = Attempts()
    async with Receiver(pki.localhost) as receiver:
        notifier = WebhookNotifier(guard=guard, url=receiver.url, secret=SECRET, allow=LOOPBACK, on_attempt=attempts)
        await _delivered(notifier)
    [received] = receiver.received
    assert received.valid
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-bastion-signature"].startswith("v1=")
    assert received.body == webhook_body(_request(), LINK, title=TITLE)
    assert ARGUMENT_SENTINEL.encode() not in received.body
    assert attempts == [WebhookAttempt("apr_1", 1, delivered=True, status=200, error=None, final=True)]


async def test_failed_attempts_are_retried_with_a_fresh_signature_until_delivered(pki: Pki, guard: EgressGuard) -> None:
    attempts, ticks = Attempts(), iter(range(3))
    async with Receiver(pki.localhost, statuses=[500, 500, 200]) as receiver:
        notifier = WebhookNotifier(
            guard=guard, url=receiver.url, secret=SECRET, allow=LOOPBACK, on_attempt=attempts, backoff_s=0.01,
            clock=lambda: time.time() + 10 * next(ticks),
        )  # fmt: skip
        await _delivered(notifier)
    assert attempts == [
        WebhookAttempt("apr_1", 1, delivered=False, status=500, error="HTTP 500", final=False),
        WebhookAttempt("apr_1", 2, delivered=False, status=500, error="HTTP 500", final=False),
        WebhookAttempt("apr_1", 3, delivered=True, status=200, error=None, final=True),
    ]
    assert [r.valid for r in receiver.received] == [True, True, True]
    assert len({r.body for r in receiver.received}) == 1
    assert len({r.headers["x-bastion-request-timestamp"] for r in receiver.received}) == 3
    assert len({r.headers["x-bastion-signature"] for r in receiver.received}) == 3


async def test_delivery_gives_up_after_the_last_attempt_with_exponential_backoff(pki: Pki, guard: EgressGuard) -> None:
    attempts, waits = Attempts(), list[float]()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with Receiver(pki.localhost, statuses=[503] * 5) as receiver:
        notifier = WebhookNotifier(
            guard=guard, url=receiver.url, secret=SECRET, allow=LOOPBACK, on_attempt=attempts, backoff_s=0.01,
            sleep=sleep,
        )  # fmt: skip
        await _delivered(notifier)
    assert [(a.attempt, a.delivered, a.status, a.final) for a in attempts] == [
        (1, False, 503, False),
        (2, False, 503, False),
        (3, False, 503, True),
    ]
    assert waits == [0.01, 0.02]
    assert len(receiver.received) == 3


async def test_an_unreachable_receiver_is_retried(guard: EgressGuard) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts = Attempts()
    notifier = WebhookNotifier(
        guard=guard, url=f"https://127.0.0.1:{port}/hook", secret=SECRET, allow=LOOPBACK, on_attempt=attempts,
        backoff_s=0.01,
    )  # fmt: skip
    await _delivered(notifier)
    assert [(a.attempt, a.delivered, a.status, a.final) for a in attempts] == [
        (1, False, None, False),
        (2, False, None, False),
        (3, False, None, True),
    ]
    assert all(a.error is not None and a.error.startswith("upstream_unavailable: ") for a in attempts)


async def test_a_webhook_to_a_private_address_is_refused_by_the_guard_and_not_retried(
    pki: Pki, guard: EgressGuard, refusals: list[Refusal]
) -> None:
    attempts = Attempts()
    async with Receiver(pki.localhost) as receiver:
        notifier = WebhookNotifier(guard=guard, url=receiver.url, secret=SECRET, on_attempt=attempts, backoff_s=0.01)
        await _delivered(notifier)
    [attempt] = attempts
    assert (attempt.attempt, attempt.delivered, attempt.status, attempt.final) == (1, False, None, True)
    assert attempt.error == "egress_denied: 127.0.0.1 is a loopback address"
    assert receiver.received == []
    assert [(r.reason, r.purpose) for r in refusals] == [("127.0.0.1 is a loopback address", "approval_webhook")]


async def test_notify_returns_at_once_while_a_slow_receiver_answers(pki: Pki, guard: EgressGuard) -> None:
    attempts = Attempts()
    async with Receiver(pki.localhost, delay_s=2.0) as receiver:
        notifier = WebhookNotifier(guard=guard, url=receiver.url, secret=SECRET, allow=LOOPBACK, on_attempt=attempts)
        started = time.perf_counter()
        notifier.notify(_request(), LINK, TITLE)
        assert time.perf_counter() - started < 0.1
        assert attempts == []
        await notifier.drain()
        assert time.perf_counter() - started >= 2.0
    assert [(a.delivered, a.final) for a in attempts] == [(True, True)]
    assert [r.valid for r in receiver.received] == [True]


async def test_aclose_cancels_a_delivery_in_flight(pki: Pki, guard: EgressGuard) -> None:
    attempts = Attempts()
    async with Receiver(pki.localhost, delay_s=30.0) as receiver:
        notifier = WebhookNotifier(guard=guard, url=receiver.url, secret=SECRET, allow=LOOPBACK, on_attempt=attempts)
        notifier.notify(_request(), LINK, TITLE)
        async with asyncio.timeout(10):
            await receiver.got_request.wait()
        started = time.perf_counter()
        await notifier.aclose()
        assert time.perf_counter() - started < 1.0
    assert attempts == []


async def test_a_failing_attempt_hook_is_logged_and_delivery_goes_on(
    pki: Pki, guard: EgressGuard, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Attempts()

    async def failing(attempt: WebhookAttempt) -> None:
        await seen(attempt)
        raise RuntimeError("audit log is down")

    async with Receiver(pki.localhost, statuses=[500, 200]) as receiver:
        notifier = WebhookNotifier(
            guard=guard, url=receiver.url, secret=SECRET, allow=LOOPBACK, on_attempt=failing, backoff_s=0.01
        )
        with caplog.at_level(logging.ERROR, logger="bastion.approvals"):
            await _delivered(notifier)
    assert [(a.attempt, a.delivered) for a in seen] == [(1, False), (2, True)]
    assert len(receiver.received) == 2
    assert sum("audit log is down" in record.getMessage() for record in caplog.records) == 2


@pytest.mark.parametrize(("attempts", "backoff_s", "timeout_s"), [(0, 1.0, 5.0), (3, -1.0, 5.0), (3, 1.0, 0.0)])
async def test_bad_retry_settings_are_refused(
    guard: EgressGuard, attempts: int, backoff_s: float, timeout_s: float
) -> None:
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        WebhookNotifier(
            guard=guard, url="https://hooks.example/x", secret=SECRET, attempts=attempts, backoff_s=backoff_s,
            timeout_s=timeout_s,
        )  # fmt: skip
