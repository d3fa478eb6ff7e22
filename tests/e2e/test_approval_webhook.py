"""The approval webhook through a real ``bastion serve``: approvers are told, signed, without delaying the call.

Real processes on loopback: the ledger MCP server (``tests/support/ledger_server``), one
``bastion serve`` per scenario (its own work directory; ``approvals.hold: 0`` so a call that
needs approval is answered "pending" at once) and a real HTTPS receiver
(``tests/support/webhook_receiver``, a certificate from the test CA that the gateway trusts
through ``egress.ca_file``) that checks every signature with ``verify`` and the shared secret,
which the gateway reads from an environment variable (``secret: {env: NAME}``).

- delivered: one signed Slack-compatible body naming the approval, tool, route and portal
  link, never the arguments; an ``approval/notified`` record with ``delivered`` true; the
  receiver answers slowly and the call's answer does not wait for it;
- failing: a receiver answering 500 with ``attempts: 2``: two records with ``delivered`` false;
- refused: a webhook on 127.0.0.1 without ``allow``: the egress guard refuses it (its own
  ``egress/connect`` record), one ``approval/notified`` record naming the refusal, nothing sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import audit_records, connect, wait_until
from tests.support.ledger_server import ledger_server
from tests.support.pki import Pki, make_pki
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy") @approval("review")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""
SECRET_ENV = "BASTION_E2E_APPROVAL_WEBHOOK_SECRET"
SECRET = "e2e-webhook-secret-5d1c"
MODE = "legacy"
SLOW_S = 4.0
"""How long the slow receiver takes to answer; the pending answer must come back well before."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture(scope="module")
def ledger_url() -> Iterator[str]:
    with ledger_server() as (url, _):
        yield url


@contextmanager
def gateway(workdir: Path, ledger_url: str, pki: Pki, webhook: dict[str, Any]) -> Iterator[BastionProcess]:
    """A running ``bastion serve`` whose ``ledger/deploy`` needs a review, announced to ``webhook``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "approvals.cedar").write_text(POLICY, encoding="utf-8")
    config = {
        "policy": {"files": [str(workdir / "approvals.cedar")]},
        "approvals": {"hold": 0, "ttl": "15m", "webhook": {"secret": {"env": SECRET_ENV}, **webhook}},
        "egress": {"ca_file": str(pki.ca_file)},
        "routes": [{
            "name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]},
            "tools": {"deploy": {"risk": "destructive"}},
        }],
    }  # fmt: skip
    bastion = BastionProcess(workdir, config)
    bastion.start(env={SECRET_ENV: SECRET})
    try:
        yield bastion
    finally:
        bastion.stop()


def deploy_pending(bastion: BastionProcess, service: str) -> tuple[str, float]:
    """rita's ``deploy(service, prod)``: the approval id of its "pending" answer, and the seconds
    the call took (from sending ``tools/call`` to its answer, the session already open)."""
    token = bastion.mint("rita", "ledger", "dev", email="rita@example.com")

    async def call() -> tuple[Any, float]:
        async with connect(bastion.url("ledger"), token, MODE) as client:
            started = time.monotonic()
            result = await client.call_tool("deploy", {"service": service, "env": "prod"})
            return result, time.monotonic() - started

    result, elapsed = asyncio.run(call())
    assert result.is_error, result
    error = result.structured_content["error"]
    assert (error["reason"], error["status"]) == ("approval_pending", "pending"), error
    return error["approval"], elapsed


def notified(bastion: BastionProcess, approval_id: str) -> list[dict[str, Any]]:
    """The ``approval/notified`` records of ``approval_id``, oldest first."""
    return [r for r in audit_records(bastion.database, "approval/notified") if r["approval"]["id"] == approval_id]


def test_the_webhook_gets_one_signed_message_without_delaying_the_call(
    tmp_path: Path, ledger_url: str, pki: Pki
) -> None:
    service = "sentinel-service-4b9e"  # an argument value that must not reach the webhook
    with (
        WebhookReceiver(pki.localhost, SECRET.encode(), delay_s=SLOW_S) as receiver,
        gateway(tmp_path / "delivered", ledger_url, pki, {"url": receiver.url, "allow": ["127.0.0.1"]}) as bastion,
    ):
        approval_id, elapsed = deploy_pending(bastion, service)
        assert elapsed < SLOW_S / 2, elapsed
        assert notified(bastion, approval_id) == []  # the receiver has not answered yet
        [record] = wait_until(lambda: notified(bastion, approval_id), timeout_s=SLOW_S + 10)
        received = receiver.received
    [message] = received
    assert message.valid
    assert message.path == "/hooks/approvals"
    assert message.headers["content-type"] == "application/json"
    body = json.loads(message.body)
    link = f"{bastion.base_url}/portal/approvals/{approval_id}"
    assert body["approval"]["id"] == approval_id
    assert (body["approval"]["tool"], body["approval"]["route"], body["approval"]["url"]) == ("deploy", "ledger", link)
    assert approval_id in body["text"]
    assert "deploy" in body["text"]
    assert link in body["text"]
    [block] = body["blocks"]
    assert block["type"] == "section"
    assert block["text"]["type"] == "mrkdwn"
    assert f"<{link}|Review>" in block["text"]["text"]
    assert service.encode() not in message.body
    assert "arguments" not in body["approval"]
    assert (record["arguments"]["delivered"], record["arguments"]["attempt"]) == (True, 1)
    assert record["arguments"]["detail"] == "HTTP 200"


def test_a_failing_receiver_is_tried_attempts_times_and_each_failure_recorded(
    tmp_path: Path, ledger_url: str, pki: Pki
) -> None:
    with (
        WebhookReceiver(pki.localhost, SECRET.encode(), status=500) as receiver,
        gateway(
            tmp_path / "failing", ledger_url, pki, {"url": receiver.url, "allow": ["127.0.0.1"], "attempts": 2}
        ) as bastion,
    ):
        approval_id, elapsed = deploy_pending(bastion, "billing")
        assert elapsed < 2.0, elapsed
        wait_until(lambda: len(notified(bastion, approval_id)) >= 2)
        time.sleep(2.5)  # past when a third attempt would come (a 2 s backoff): none does, 2 is the limit
        records = notified(bastion, approval_id)
        received = receiver.received
    assert [(r["arguments"]["attempt"], r["arguments"]["delivered"], r["arguments"]["detail"]) for r in records] == [
        (1, False, "HTTP 500"),
        (2, False, "HTTP 500"),
    ]
    assert len(received) == 2
    assert all(message.valid for message in received)
    # each attempt is signed afresh (a new timestamp, at least the 1 s backoff later)
    first, second = (int(m.headers["x-bastion-request-timestamp"]) for m in received)
    assert second > first


def test_a_webhook_on_a_private_address_without_allow_is_refused_by_the_egress_guard(
    tmp_path: Path, ledger_url: str, pki: Pki
) -> None:
    with (
        WebhookReceiver(pki.localhost, SECRET.encode()) as receiver,
        gateway(tmp_path / "refused", ledger_url, pki, {"url": receiver.url, "attempts": 3}) as bastion,
    ):
        approval_id, elapsed = deploy_pending(bastion, "search")
        assert elapsed < 2.0, elapsed
        [record] = wait_until(lambda: notified(bastion, approval_id))
        time.sleep(1.5)  # a retry would come after 1 s backoff: none does, a refusal is final
        records = notified(bastion, approval_id)
        refusals = audit_records(bastion.database, "egress/connect")
        received = receiver.received
    assert records == [record]
    assert (record["arguments"]["attempt"], record["arguments"]["delivered"]) == (1, False)
    assert record["arguments"]["detail"].startswith("egress_denied: ")
    assert "loopback" in record["arguments"]["detail"]
    assert receiver.url not in json.dumps(record)  # the webhook URL is a secret: not in the attempt's record
    assert received == []
    [refusal] = [r for r in refusals if r["arguments"]["purpose"] == "approval_webhook"]
    assert refusal["decision"]["effect"] == "deny"
    assert refusal["decision"]["reason"] == "egress_denied"
    assert "loopback" in refusal["arguments"]["reason"]
    assert "/hooks/approvals" not in json.dumps(refusal)  # the guard's record does not show the path either
