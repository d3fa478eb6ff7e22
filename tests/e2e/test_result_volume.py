"""Result volume through a real ``bastion serve`` (issue 14): a tool that suddenly returns 100 times
its usual volume is flagged and, under a withholding policy, the client never sees the result; the
baselines survive a restart.

Real processes on loopback: two instances of ``tests/support/rows_server`` (an MCP server written
with the official SDK whose ``customers(count)`` returns ``count`` rows as text blocks and
``structuredContent``; one answers POSTs with SSE streams, one with JSON bodies), ``bastion serve``
with three routes (``flagged``: the default ``result_volume: flag``; ``held`` and ``held-json``:
``withhold``), the official SDK client, and raw 2026-07-28 requests where the test needs the
bytes on the wire.

``volume.min_samples`` is 5 and each route learns 20 usual results (10 rows) first: the 95th
percentile of 21 results is the 20th smallest, so one large result already learnt does not move
it, and the large call after the restart is judged by the same baseline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp.types import CallToolResult
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import audit_records, connect, modern_post, wait_until
from tests.support.rows_server import customer_rows, rows_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("analysts-read-customers")
permit (principal in Group::"analysts", action == Action::"tools/call", resource);
"""
USUAL, BIG, LEARNT = 10, 1_000, 20


@dataclass
class World:
    bastion: BastionProcess
    json_upstream: str

    def token(self, route: str) -> str:
        return self.bastion.mint("ana", route, "analysts", email="ana@example.com")

    def outcomes(self, route: str) -> list[dict[str, Any]]:
        """The outcome records of calls on ``route``, oldest first."""
        records = audit_records(self.bastion.database, "tools/call")
        return [r for r in records if r["kind"] == "outcome" and r["route"] == route]

    def flagged(self, route: str, count: int) -> list[dict[str, Any]]:
        """The outcome records of ``route`` flagged ``volume_anomaly``, once there are ``count``."""

        def probe() -> list[dict[str, Any]] | None:
            found = [r for r in self.outcomes(route) if "volume_anomaly" in r["result"]["flags"]]
            return found if len(found) >= count else None

        return wait_until(probe, timeout_s=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("result-volume")
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    with rows_server() as sse_url, rows_server(json_response=True) as json_url:

        def route(name: str, url: str, mode: str) -> dict[str, Any]:
            return {
                "name": name,
                "http": {"url": url, "allow_http": True, "allow": ["127.0.0.1"]},
                "result_volume": mode,
            }

        config = {
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "volume": {"min_samples": 5},
            "routes": [route("flagged", sse_url, "flag"), route("held", sse_url, "withhold"),
                       route("held-json", json_url, "withhold")],
        }  # fmt: skip
        with BastionProcess(workdir, config) as bastion:
            yield World(bastion, json_url)


async def _calls(world: World, route: str, *counts: int) -> list[CallToolResult]:
    """``customers(count)`` for each of ``counts``, in order, on one SDK client session (2025-11-25)."""
    async with connect(world.bastion.url(route), world.token(route), "legacy") as client:
        return [await client.call_tool("customers", {"count": count}) for count in counts]


def _digest(result: dict[str, Any]) -> str:
    """SHA-256 of a result's compact JSON, as Bastion records it."""
    return hashlib.sha256(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_a_result_100_times_the_usual_is_relayed_and_flagged_on_a_flag_route(world: World) -> None:
    *usual, big = asyncio.run(_calls(world, "flagged", *[USUAL] * LEARNT, BIG))
    assert all(len(result.content) == USUAL for result in usual)
    assert not big.is_error
    assert len(big.content) == BIG
    assert big.structured_content == {"rows": customer_rows(BIG)}

    (record,) = world.flagged("flagged", 1)
    assert record["result"]["error"] is False
    volume = record["result"]["volume"]
    assert (volume["blocks"], volume["items"], volume["samples"]) == (BIG, BIG, LEARNT)
    assert (volume["baseline"]["blocks"], volume["baseline"]["items"]) == (USUAL, USUAL)
    assert 90 * volume["baseline"]["bytes"] < volume["bytes"] < 110 * volume["baseline"]["bytes"]
    assert volume["exceeded"] == ["bytes", "blocks", "items"]
    assert (volume["anomalous"], volume["withheld"]) == (True, False)
    assert len(volume["result_sha256"]) == 64
    usual_records = [r for r in world.outcomes("flagged") if not r["result"]["flags"]]
    assert len(usual_records) == LEARNT
    assert all("volume" not in r["result"] for r in usual_records)  # usual results: no measures recorded


def test_under_withhold_the_client_gets_a_tool_error_and_never_the_rows(world: World) -> None:
    *usual, big = asyncio.run(_calls(world, "held", *[USUAL] * LEARNT, BIG))
    assert all(not result.is_error and len(result.content) == USUAL for result in usual)
    assert big.is_error
    text = big.content[0].text  # type: ignore[union-attr]
    assert "withheld" in text
    assert "times the usual" in text
    assert "administrator" in text
    assert "customer-" not in big.model_dump_json()  # not one row reached the client
    error = (big.structured_content or {})["error"]
    assert (error["reason"], error["cause"]) == ("result_withheld", "result_volume")
    assert 90 <= error["times"] <= 110

    (record,) = world.flagged("held", 1)
    result = record["result"]
    assert (result["error"], result["error_code"]) == (True, "result_withheld")
    assert result["volume"]["withheld"] is True
    assert error["decision_id"] == record["decision_id"]  # the message names the call to review
    assert "customer-" not in json.dumps(record)  # the upstream's answer is in the log by digest only


def test_a_withheld_json_reply_never_puts_a_row_on_the_wire_and_is_recorded_by_digest(world: World) -> None:
    url, token = world.bastion.url("held-json"), world.token("held-json")
    call = {"name": "customers", "arguments": {"count": USUAL}}
    with httpx2.Client(timeout=30) as http:
        for _ in range(LEARNT):
            assert modern_post(http, url, token, "tools/call", call).json()["result"]["isError"] is False
        big = {"name": "customers", "arguments": {"count": BIG}}
        answer = modern_post(http, url, token, "tools/call", big)
        upstream = modern_post(http, world.json_upstream, None, "tools/call", big)  # the same call, directly
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert b"customer-" not in answer.content
    message = answer.json()
    assert message["id"] == 1
    assert message["result"]["isError"] is True
    assert message["result"]["resultType"] == "complete"

    (record,) = world.flagged("held-json", 1)
    assert record["result"]["volume"]["withheld"] is True
    assert record["result"]["volume"]["result_sha256"] == _digest(upstream.json()["result"])


def test_the_baselines_survive_a_restart(world: World) -> None:
    world.bastion.stop()  # a clean stop saves the baselines changed since the last sweep
    world.bastion.start()
    flagged, held = asyncio.run(_calls(world, "flagged", BIG)), asyncio.run(_calls(world, "held", BIG))
    assert len(flagged[0].content) == BIG
    assert held[0].is_error
    assert "customer-" not in held[0].model_dump_json()
    for route, learnt in (("flagged", LEARNT + 1), ("held", LEARNT)):  # a withheld result is not learnt
        after = world.flagged(route, 2)[-1]["result"]["volume"]
        assert after["samples"] == learnt  # judged by the baseline learnt before the restart
        assert (after["baseline"]["blocks"], after["baseline"]["items"]) == (USUAL, USUAL)
