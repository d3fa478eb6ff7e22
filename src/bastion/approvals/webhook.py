"""The webhook that tells approvers a new approval request is waiting (Bastion issue 13).

When a call is held for an approval, the gateway calls ``WebhookNotifier.notify``: it
returns at once and a background task POSTs a Slack-compatible JSON message (``text``,
``blocks`` and an ``approval`` object for other receivers) with the link to review it.
Delivery never blocks the call's hold and never fails it: a receiver that is down only
delays the people, not the decision, which the approval store holds whatever happens.

The body names the request (requester, client, route, tool, risk, classification, id,
expiry, link), never the call's arguments: even redacted they may be sensitive, and a chat
channel is a wider audience than the approval page (``webhook_body``).

Signature (the shape of Slack's request signing, with Bastion's header names)::

    X-Bastion-Request-Timestamp: <epoch seconds>
    X-Bastion-Signature: v1=<hex HMAC-SHA256(secret, b"v1:" + timestamp + b":" + body)>

A receiver verifies it with ``verify``: recompute the HMAC over the raw body it received
and the timestamp header, compare in constant time, and refuse a timestamp more than five
minutes from its clock (a replayed message). Each attempt gets a fresh timestamp and
signature.

Every attempt goes through the egress guard (``EgressGuard.send``, purpose
``"approval_webhook"``): a webhook URL that names or resolves to a private, loopback or
metadata address is refused unless ``egress.allow`` (or the notifier's ``allow``)
permits it (SSRF, MCP security best practices), and no redirect is followed. A failed
attempt (non-2xx, unreachable, timeout) is retried with exponential backoff; a refusal by
the guard is not (policy will not change between attempts). After each attempt the
``on_attempt`` hook is awaited with a ``WebhookAttempt`` (the caller writes the audit
record); a failing hook is logged and ignored. The webhook URL is treated as a secret
(Slack's incoming webhook URLs are): it is never logged nor put in an attempt.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bastion.approvals.model import ApprovalRequest
from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.egress.client import EgressGuard
from bastion.errors import EgressDenied, UpstreamUnavailable

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookAttempt",
    "WebhookNotifier",
    "sign",
    "verify",
    "webhook_body",
]

logger = logging.getLogger("bastion.approvals")

TIMESTAMP_HEADER = "X-Bastion-Request-Timestamp"
"""The header carrying the signing time, epoch seconds as a decimal integer."""
SIGNATURE_HEADER = "X-Bastion-Signature"
"""The header carrying ``sign``'s ``v1=<hex>``."""

_MAX_RESPONSE_BYTES = 64 * 1024
_MAX_VALUE_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def webhook_body(request: ApprovalRequest, link: str, *, title: str) -> bytes:
    """The Slack-compatible message announcing ``request``: compact UTF-8 JSON.

    ``{"text": one line for notifications, "blocks": [one mrkdwn section], "approval": {...}}``
    where ``approval`` holds ``id``, ``kind``, ``route``, ``tool``, ``requester`` (the label),
    ``risk``, ``classification``, ``expires_at`` (RFC 3339, UTC) and ``url`` (``link``) for
    receivers other than Slack. ``title`` heads the message ("Bastion approval request").

    The call's arguments are never included: even redacted they may be sensitive, and the
    approver sees them on the page ``link`` leads to. Values from outside (tool names,
    labels, ids) are shown in ``text`` and ``blocks`` with Slack's mrkdwn control characters
    (``&``, ``<``, ``>``) escaped, line breaks flattened and long values cut, so a tool named
    ``<!channel>`` cannot ping a channel or forge a link; ``approval`` carries them as they are.
    """
    binding = request.binding
    expires = _utc(request.expires_at)
    url = link.replace("|", "%7C")  # "|" ends the URL part of a mrkdwn link
    action = "confirm" if request.kind == "confirm" else "review"
    text = (
        f"{_shown(title)}: {_shown(request.requester_label)} asks to call {_shown(binding.tool)} "
        f"on {_shown(binding.route)} (risk {_shown(request.risk)}); {action}: {_escape(url)}"
    )
    fields = [
        ("Requester", request.requester_label),
        ("Client", request.client_id),
        ("Route", binding.route),
        ("Tool", binding.tool),
        ("Risk", request.risk),
        ("Classification", request.classification),
        ("Approval", request.id),
        ("Expires", expires),
    ]
    section = "\n".join(
        [f"*{_shown(title)}*", *(f"*{name}:* {_shown(value)}" for name, value in fields), f"<{_escape(url)}|Review>"]
    )
    message: dict[str, Any] = {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}],
        "approval": {
            "id": request.id,
            "kind": request.kind,
            "route": binding.route,
            "tool": binding.tool,
            "requester": request.requester_label,
            "risk": request.risk,
            "classification": request.classification,
            "expires_at": expires,
            "url": link,
        },
    }
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``"v1=" + hex(HMAC-SHA256(secret, b"v1:" + str(timestamp) + b":" + body))`` (RFC 2104, FIPS 180-4):
    the value of ``X-Bastion-Signature`` for ``body`` sent at ``timestamp`` (epoch seconds)."""
    message = b"v1:" + str(timestamp).encode() + b":" + body
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: int, body: bytes, signature: str, *, now: float, tolerance_s: float = 300) -> bool:
    """Whether ``signature`` is ``sign(secret, timestamp, body)`` and ``timestamp`` is within
    ``tolerance_s`` seconds of ``now`` (either way). For receivers and tests; compares in constant time."""
    if abs(now - timestamp) > tolerance_s or not signature.isascii():
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One delivery attempt of the notification for approval ``approval_id``.

    ``attempt`` counts from 1; ``delivered`` when the receiver answered 2xx; ``status`` its
    HTTP status (``None`` when there was no answer); ``error`` why it failed (``"HTTP 500"``,
    ``"egress_denied: 127.0.0.1 is a loopback address"``), ``None`` when delivered; ``final``
    when no attempt follows (delivered, refused by the guard, or the last one).
    """

    approval_id: str
    attempt: int
    delivered: bool
    status: int | None
    error: str | None
    final: bool


#: Awaited after every attempt; the gateway's writes an audit record.
AttemptHook = Callable[[WebhookAttempt], Awaitable[None]]


class WebhookNotifier:
    """Posts approval notifications to one webhook ``url`` in the background, signed with ``secret``.

    ``guard`` makes every request (``allow`` is permitted besides its own allow list);
    ``attempts`` (at least 1) bounds the tries per notification, ``backoff_s`` is the wait
    before the second (doubled before each next one), ``timeout_s`` bounds each try;
    ``on_attempt`` is awaited after every try; ``clock`` (epoch seconds) and ``sleep`` are
    replaceable for tests. Raises ``ValueError`` for a bad ``attempts``, ``backoff_s`` or
    ``timeout_s``. Call ``aclose()`` at shutdown (or ``drain()`` to let deliveries finish).
    """

    def __init__(
        self,
        *,
        guard: EgressGuard,
        url: str,
        secret: bytes,
        allow: AllowList = NO_EXCEPTIONS,
        attempts: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 5.0,
        on_attempt: AttemptHook | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError(
                f"attempts must be >= 1, backoff_s >= 0 and timeout_s > 0, not {attempts}, {backoff_s}, {timeout_s}"
            )
        self._guard = guard
        self._url = url
        host = urlsplit(url)
        self._shown = f"{host.scheme}://{host.netloc.rpartition('@')[2]}/…"  # a refusal's record: never the path
        self._secret = secret
        self._allow = allow
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._on_attempt = on_attempt
        self._clock = clock
        self._sleep = sleep
        self._deliveries: set[asyncio.Task[None]] = set()

    def notify(self, request: ApprovalRequest, link: str, title: str) -> None:
        """Start delivering the notification of ``request`` (``link`` to review it) and return at once.

        Must be called with a running event loop. Never raises for a delivery problem: every
        outcome reaches ``on_attempt``, and anything unexpected is logged.
        """
        task = asyncio.get_running_loop().create_task(self._run(request, link, title), name=f"webhook:{request.id}")
        self._deliveries.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self._deliveries.discard)

    async def drain(self) -> None:
        """Wait until every delivery started so far (and any started meanwhile) has finished."""
        while self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel the deliveries still running and wait for them to end."""
        deliveries = list(self._deliveries)
        for task in deliveries:
            task.cancel()
        await asyncio.gather(*deliveries, return_exceptions=True)

    async def _run(self, request: ApprovalRequest, link: str, title: str) -> None:
        """Deliver the notification; nothing but cancellation escapes."""
        try:
            await self._deliver(request.id, webhook_body(request, link, title=title))
        except Exception:  # a background task: nobody awaits it, the hold goes on regardless
            logger.exception("approval webhook for %s failed unexpectedly", request.id)

    async def _deliver(self, approval_id: str, body: bytes) -> None:
        """Up to ``attempts`` tries, each reported; backoff between them; a refusal ends it."""
        for attempt in range(1, self._attempts + 1):
            status, error, retry = await self._attempt(body)
            delivered = error is None
            final = delivered or not retry or attempt == self._attempts
            await self._report(WebhookAttempt(approval_id, attempt, delivered, status, error, final))
            if final:
                return
            await self._sleep(self._backoff_s * 2 ** (attempt - 1))

    async def _attempt(self, body: bytes) -> tuple[int | None, str | None, bool]:
        """One signed POST: ``(status, error or None when delivered, whether to retry)``."""
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        try:
            result = await self._guard.send(
                "POST", self._url, headers=headers, body=body, max_bytes=_MAX_RESPONSE_BYTES,
                timeout_s=self._timeout_s, allow=self._allow, purpose="approval_webhook",
                shown_as=self._shown,
            )  # fmt: skip
        except EgressDenied as exc:
            return None, f"{exc.code}: {exc.message}", False
        except UpstreamUnavailable as exc:
            return None, f"{exc.code}: {exc.message}", True
        except Exception as exc:  # noqa: BLE001 - any failure is a failed attempt; its text may hold the URL
            return None, type(exc).__name__, True
        if 200 <= result.status < 300:
            return result.status, None, False
        return result.status, f"HTTP {result.status}", True

    async def _report(self, attempt: WebhookAttempt) -> None:
        """Hand ``attempt`` to ``on_attempt``; a failing hook is logged, never raised."""
        if self._on_attempt is None:
            return
        try:
            await self._on_attempt(attempt)
        except Exception as exc:  # noqa: BLE001 - reporting never changes the delivery
            logger.error("approval webhook attempt %d for %s was not recorded: %s", attempt.attempt,
                         attempt.approval_id, exc)  # fmt: skip


def _utc(epoch_s: float) -> str:
    """``1767225600.0`` -> ``"2026-01-01T00:00:00Z"`` (RFC 3339, whole seconds)."""
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _escape(value: str) -> str:
    """Slack's mrkdwn control characters escaped (``&`` first, then ``<`` and ``>``)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _shown(value: str) -> str:
    """An outside value for mrkdwn: one line, at most 200 characters, control characters escaped."""
    line = _CONTROL.sub(" ", value).strip()
    if len(line) > _MAX_VALUE_CHARS:
        line = line[: _MAX_VALUE_CHARS - 1] + "\u2026"
    return _escape(line)
