"""Result redaction through a real ``bastion serve`` (issue 15): results with planted secrets and personal
data are redacted for the client and recorded as redacted (rule ids and counts, never the values); an
SSE stream is redacted event by event.

Real processes on loopback: two instances of ``tests/support/leaky_server`` (an MCP server written
with the official SDK whose tool, resource and prompt hold the values of ``PLANTED``; one answers
POSTs with SSE streams, one with JSON bodies), ``bastion serve`` with three routes (``leaky``: the
default ``results`` (secrets redacted, instructions flagged); ``strict``: ``redact: [secrets, pii]``
and ``injection: replace``; ``leaky-json``: the JSON upstream, defaults), the official SDK client,
and raw 2026-07-28 requests where the test needs the bytes on the wire. Contractors are allowed by a
permit carrying ``@redact("pii")``, analysts by one without.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LoggingMessageNotificationParams
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import audit_records, connect, modern_post, wait_until
from tests.support.leaky_server import PEM_BODY, PLANTED, SECRET_VALUES, leaky_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("analysts-call")
permit (principal in Group::"analysts", action == Action::"tools/call", resource);

@id("analysts-read")
permit (principal in Group::"analysts", action == Action::"resources/read", resource);

@id("analysts-prompts")
permit (principal in Group::"analysts", action == Action::"prompts/get", resource);

@id("contractors-call")
@redact("pii")
permit (principal in Group::"contractors", action == Action::"tools/call", resource);
"""
METHODS = ("tools/call", "resources/read", "prompts/get")
SECRETS = [PLANTED[rule] for rule in SECRET_VALUES]
PERSONAL = [value for rule, value in PLANTED.items() if rule not in SECRET_VALUES]


@dataclass
class World:
    bastion: BastionProcess
    json_upstream: str

    def token(self, route: str, group: str = "analysts") -> str:
        return self.bastion.mint("ann", route, group, email="ann@corp.example")

    def outcome(self, route: str, target: str, count: int = 1) -> dict[str, Any]:
        """The last outcome record of ``target`` on ``route``, once there are ``count`` of them."""

        def probe() -> list[dict[str, Any]] | None:
            records = [r for m in METHODS for r in audit_records(self.bastion.database, m)]
            found = [r for r in records if r["kind"] == "outcome" and r["route"] == route and r["target"] == target]
            return found if len(found) >= count else None

        return wait_until(probe, timeout_s=5)[-1]

    def every_record(self) -> str:
        with sqlite3.connect(self.bastion.database) as db:
            return "\n".join(row[0] for row in db.execute("SELECT record FROM audit_events"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("result-redaction")
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    with leaky_server() as sse_url, leaky_server(json_response=True) as json_url:

        def route(name: str, url: str, **results: Any) -> dict[str, Any]:
            upstream = {"url": url, "allow_http": True, "allow": ["127.0.0.1"]}
            return {"name": name, "http": upstream, **({"results": results} if results else {})}

        config = {
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "routes": [
                route("leaky", sse_url),
                route("strict", sse_url, redact=["secrets", "pii"], injection="replace"),
                route("leaky-json", json_url),
            ],
        }  # fmt: skip
        with BastionProcess(workdir, config) as bastion:
            yield World(bastion, json_url)


def _assert_none_of(values: list[str], seen: str) -> None:
    for value in values:
        assert value not in seen, f"{value!r} reached the client"


def test_secrets_in_a_tool_result_never_reach_the_client_and_are_recorded_by_rule(world: World) -> None:
    async def call() -> Any:
        async with connect(world.bastion.url("leaky"), world.token("leaky"), "legacy") as client:
            return await client.call_tool("lookup_customer", {})

    result = asyncio.run(call())
    assert not result.is_error
    seen = result.model_dump_json()
    _assert_none_of(SECRETS, seen)
    integration = (result.structured_content or {})["integration"]
    assert integration["aws_key"] == "[REDACTED:aws_access_key]"
    assert integration["github"] == "[REDACTED:github_token]"
    assert integration["database"] == "postgres://crm:[REDACTED:url_password]@db.internal:5432/crm"
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    for value in PERSONAL:  # personal data is the route's to ask for: not redacted by default
        assert value in seen

    record = world.outcome("leaky", "lookup_customer")["result"]
    assert record["redacted"] == {"aws_access_key": 2, "github_token": 2, "url_password": 2}
    assert record["redactions"] == 6
    assert "redacted" in record["flags"]
    _assert_none_of(SECRETS, world.every_record())


def test_a_permit_with_redact_pii_redacts_personal_data_for_its_callers(world: World) -> None:
    async def call() -> Any:
        async with connect(world.bastion.url("leaky"), world.token("leaky", "contractors"), "legacy") as client:
            return await client.call_tool("lookup_customer", {})

    result = asyncio.run(call())
    seen = result.model_dump_json()
    _assert_none_of(SECRETS + PERSONAL, seen)
    customer = result.structured_content or {}
    assert (customer["email"], customer["card"], customer["iban"], customer["ssn"], customer["phone"]) == (
        "[REDACTED:email]", "[REDACTED:payment_card]", "[REDACTED:iban]", "[REDACTED:us_ssn]", "[REDACTED:phone]",
    )  # fmt: skip
    assert customer["name"] == "Ann Lee"  # what is neither stays

    outcome = world.outcome("leaky", "lookup_customer", count=2)
    assert {"email", "payment_card", "iban", "us_ssn", "phone", "aws_access_key"} <= set(outcome["result"]["redacted"])
    decision = next(
        r for r in audit_records(world.bastion.database, "tools/call")
        if r["kind"] == "decision" and r["decision_id"] == outcome["decision_id"]
    )  # fmt: skip
    assert decision["decision"]["obligations"] == {"redact": "pii"}
    assert decision["decision"]["policy_ids"] == ["contractors-call"]
    _assert_none_of(SECRETS + PERSONAL, world.every_record())


def test_resource_contents_and_prompt_messages_are_redacted(world: World) -> None:
    async def read() -> tuple[Any, Any]:
        async with connect(world.bastion.url("leaky"), world.token("leaky"), "legacy") as client:
            return await client.read_resource("config://app.env"), await client.get_prompt("incident", {})

    resource, prompt = asyncio.run(read())
    text = resource.contents[0].text
    assert "DATABASE_URL=postgres://app:[REDACTED:url_password]@db.internal" in text
    assert "AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key]" in text
    assert "TLS_KEY=[REDACTED:private_key]" in text
    assert "LOG_LEVEL=info" in text
    _assert_none_of([*SECRETS, PEM_BODY], resource.model_dump_json())
    assert "[REDACTED:github_token]" in prompt.messages[0].content.text
    _assert_none_of(SECRETS, prompt.model_dump_json())
    assert world.outcome("leaky", "config://app.env")["result"]["redacted"] == {
        "url_password": 1, "aws_access_key": 1, "private_key": 1,
    }  # fmt: skip
    assert world.outcome("leaky", "incident")["result"]["redacted"] == {"github_token": 1}


def test_an_sse_stream_is_redacted_event_by_event(world: World) -> None:
    count, gap_s = 4, 0.4
    arrived: list[tuple[float, str]] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        arrived.append((time.monotonic(), str(params.data)))

    async def call() -> tuple[Any, float]:
        headers = {"Authorization": f"Bearer {world.token('leaky')}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
            Client(streamable_http_client(world.bastion.url("leaky"), http_client=http), mode="legacy",
                   logging_callback=on_log) as client,
        ):  # fmt: skip
            result = await client.call_tool("stream_logs", {"count": count, "gap_s": gap_s})
            return result, time.monotonic()

    result, done = asyncio.run(call())
    assert [text for _, text in arrived] == [
        f"step {n}: deploying with [REDACTED:aws_access_key] and [REDACTED:github_token]" for n in range(count)
    ]
    # each event was relayed as the upstream sent it: the first came well before the last and the result
    assert arrived[-1][0] - arrived[0][0] >= (count - 1) * gap_s * 0.75
    assert done - arrived[0][0] >= count * gap_s * 0.75
    assert "done; key [REDACTED:aws_access_key]" in result.model_dump_json()
    _assert_none_of(SECRETS, result.model_dump_json())
    redacted = world.outcome("leaky", "stream_logs")["result"]["redacted"]
    assert redacted["github_token"] == count
    assert redacted["aws_access_key"] >= count + 1  # the logs and the result (text, and structured if any)


def test_instructions_in_a_result_are_replaced_by_a_notice_where_the_route_asks(world: World) -> None:
    async def call(route: str) -> Any:
        async with connect(world.bastion.url(route), world.token(route), "legacy") as client:
            return await client.call_tool("read_page", {})

    flagged, replaced = asyncio.run(call("leaky")), asyncio.run(call("strict"))
    assert "Ignore all previous instructions" in flagged.content[0].text  # type: ignore[union-attr]
    assert world.outcome("leaky", "read_page")["result"]["injection"]["replaced"] == 0
    text = replaced.content[0].text  # type: ignore[union-attr]
    assert "instructions addressed to the AI model" in text
    assert "id_rsa" not in replaced.model_dump_json()
    record = world.outcome("strict", "read_page")
    assert record["decision_id"] in text
    assert "injection" in record["result"]["flags"]
    injection = record["result"]["injection"]
    assert injection["rules"]["ignore_instructions"] == injection["replaced"] >= 1


def test_a_json_reply_never_puts_a_planted_value_on_the_wire(world: World) -> None:
    call = {"name": "lookup_customer", "arguments": {}}
    with httpx2.Client(timeout=30) as http:
        direct = modern_post(http, world.json_upstream, None, "tools/call", call)
        answer = modern_post(http, world.bastion.url("leaky-json"), world.token("leaky-json"), "tools/call", call)
    for value in SECRETS:
        assert value.encode() in direct.content  # planted upstream ...
        assert value.encode() not in answer.content  # ... and not on Bastion's wire
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["result"]["structuredContent"]["integration"]["aws_key"] == "[REDACTED:aws_access_key]"
