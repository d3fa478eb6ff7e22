"""Hot reload of the policy sets through a real ``bastion serve`` (issue 17, ``bastion.policy.reloading``): SIGHUP
puts a changed policy in force without a restart and records it with the new version; a broken policy is refused
and recorded while the running set keeps deciding; ``policy.watch`` reloads on the file's change alone; and with
``stores.redis`` a replica that reloads tells the others, which reload too.

Real processes on loopback: ``tests/support/leaky_server`` (an MCP server written with the official SDK, JSON
replies), ``bastion serve`` (one, or two replicas sharing the Redis every machine of ours runs on 6379), raw
2026-07-28 requests for the calls.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import BIN, BastionProcess
from tests.support.databases import REDIS_URL, delete_redis_keys
from tests.support.e2e_helpers import audit_records, legacy_post, modern_post, open_session, rpc, wait_until
from tests.support.leaky_server import leaky_server

pytestmark = pytest.mark.e2e

PERMIT = '@id("ann-calls")\npermit (principal == User::"ann", action == Action::"tools/call", resource);\n'
FORBID = '@id("no-pages")\nforbid (principal, action, resource == Tool::"leaky/read_page");\n'


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with leaky_server(json_response=True) as url:
        yield url


def _bastion(workdir: Path, policy: Path, upstream: str, *, watch: bool = False, **extra: Any) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "policy": {"files": [str(policy)], "watch": watch},
        "routes": [{"name": "leaky", "http": {"url": upstream, "allow_http": True, "allow": ["127.0.0.1"]}}],
        **extra,
    }
    return BastionProcess(workdir, config).start()


def _allowed(bastion: BastionProcess, token: str) -> bool:
    with httpx2.Client(timeout=10) as http:
        reply = modern_post(http, bastion.url("leaky"), token, "tools/call", {"name": "read_page", "arguments": {}})
    message = reply.json()
    assert reply.status_code == 200, reply.text
    if "error" in message:
        assert message["error"]["code"] == -32003, message  # denied by policy, nothing else
        return False
    return True


def _reloads(bastion: BastionProcess) -> list[dict[str, Any]]:
    return audit_records(bastion.database, "policy/reload")


def _log(bastion: BastionProcess) -> list[dict[str, Any]]:
    """Every record of the log, in ``seq`` order."""
    with sqlite3.connect(bastion.database) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT record FROM audit_events ORDER BY seq")]


def _call_versions(bastion: BastionProcess) -> list[tuple[str, str]]:
    """``(effect, policy_version)`` of each ``tools/call`` decision record, oldest first."""
    return [(r["decision"]["effect"], r["decision"]["policy_version"])
            for r in audit_records(bastion.database, "tools/call") if r["kind"] == "decision"]  # fmt: skip


def test_sighup_applies_a_changed_policy_and_refuses_a_broken_one(tmp_path: Path, upstream: str) -> None:
    policy = tmp_path / "policy.cedar"
    policy.write_text(PERMIT, encoding="utf-8")
    with _bastion(tmp_path / "one", policy, upstream) as bastion:
        token = bastion.mint("ann", "leaky")
        assert _allowed(bastion, token)
        policy.write_text(PERMIT + FORBID, encoding="utf-8")
        bastion.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: not _allowed(bastion, token), timeout_s=10)
        [applied] = _reloads(bastion)
        assert (applied["decision"]["effect"], applied["arguments"]["trigger"]) == ("allow", "sighup")
        new, old = applied["decision"]["policy_version"], applied["arguments"]["previous_version"]
        decided = wait_until(lambda: [c for c in _call_versions(bastion) if c[0] == "deny"] and _call_versions(bastion))
        assert set(decided) == {("allow", old), ("deny", new)}  # each call recorded with the set that decided it
        log = [(r["method"], (r["decision"] or {}).get("policy_version")) for r in _log(bastion)]
        at = log.index(("policy/reload", new))
        assert ("tools/call", new) not in log[:at]  # the change is on record before any decision it made
        assert ("tools/call", old) not in log[at:]

        policy.write_text(PERMIT + "forbid (principal, action, resource) when { 1 + };\n", encoding="utf-8")
        bastion.proc.send_signal(signal.SIGHUP)
        refused = wait_until(lambda: _reloads(bastion)[1:], timeout_s=10)[0]
        assert (refused["decision"]["effect"], refused["decision"]["reason"]) == ("deny", "reload_refused")
        assert "policy.cedar" in refused["arguments"]["error"]
        assert not _allowed(bastion, token)  # the last good set still decides
        wait_until(lambda: len(_call_versions(bastion)) == len(decided) + 1)
        assert _call_versions(bastion)[-1] == ("deny", new)
        assert bastion.proc.poll() is None
    assert bastion.cli("audit", "verify", "--config", str(bastion.config_path)).returncode == 0


def test_policy_watch_reloads_when_the_file_changes(tmp_path: Path, upstream: str) -> None:
    policy = tmp_path / "policy.cedar"
    policy.write_text(PERMIT, encoding="utf-8")
    with _bastion(tmp_path / "one", policy, upstream, watch=True) as bastion:
        token = bastion.mint("ann", "leaky")
        assert _allowed(bastion, token)
        staged = tmp_path / "policy.cedar.new"  # saved the way editors do: a new file renamed over the old
        staged.write_text(PERMIT + FORBID, encoding="utf-8")
        staged.replace(policy)
        wait_until(lambda: not _allowed(bastion, token), timeout_s=10)
        [applied] = _reloads(bastion)
        assert applied["arguments"]["trigger"] == "file change"


def test_a_replica_that_reloads_tells_the_others_through_redis(tmp_path: Path, upstream: str) -> None:
    prefix = f"bastion-test-{uuid.uuid4().hex[:12]}:"
    policy = tmp_path / "policy.cedar"
    policy.write_text(PERMIT, encoding="utf-8")
    stores = {"stores": {"redis": {"url": REDIS_URL, "prefix": prefix}}}
    try:
        with _bastion(tmp_path / "a", policy, upstream, **stores) as first, \
                _bastion(tmp_path / "b", policy, upstream, **stores) as second:  # fmt: skip
            tokens = {first: first.mint("ann", "leaky"), second: second.mint("ann", "leaky")}
            assert all(_allowed(replica, token) for replica, token in tokens.items())
            policy.write_text(PERMIT + FORBID, encoding="utf-8")
            first.proc.send_signal(signal.SIGHUP)  # the other replica is not signalled
            for replica, token in tokens.items():
                wait_until(lambda r=replica, t=token: not _allowed(r, t), timeout_s=10)
            [told] = _reloads(first)
            [heard] = _reloads(second)
            assert told["arguments"]["trigger"] == "sighup"
            assert heard["arguments"]["trigger"].startswith("replica ")
            assert heard["decision"]["policy_version"] == told["decision"]["policy_version"]
    finally:
        asyncio.run(delete_redis_keys(prefix))


def _call(bastion: BastionProcess, route: str, token: str, tool: str, arguments: dict[str, Any]) -> httpx2.Response:
    with httpx2.Client(timeout=30) as http:
        return modern_post(http, bastion.url(route), token, "tools/call", {"name": tool, "arguments": arguments})


def test_sighup_reloads_the_routes(tmp_path: Path, upstream: str) -> None:
    """A route added serves through its real upstream (a stdio server started by the reload); a route removed
    answers as an unknown path while the call in flight on it finishes; a broken new route refuses the reload."""
    policy = tmp_path / "policy.cedar"
    policy.write_text(PERMIT, encoding="utf-8")
    http_route = {"http": {"url": upstream, "allow_http": True, "allow": ["127.0.0.1"]}}
    with _bastion(tmp_path / "one", policy, upstream) as bastion:
        bastion.config["routes"].append({"name": "gone", **http_route})
        bastion.write_config()
        bastion.proc.send_signal(signal.SIGHUP)
        [added] = wait_until(lambda: _reloads(bastion), timeout_s=10)
        assert added["arguments"]["routes"] == {"added": ["gone"], "removed": [], "changed": []}
        assert added["decision"]["policy_version"] == added["arguments"]["previous_version"]  # same policies
        gone = bastion.mint("ann", "gone")
        with ThreadPoolExecutor(1) as pool:  # a call of ~3 s in flight on the route about to go
            slow = pool.submit(_call, bastion, "gone", gone, "stream_logs", {"count": 6, "gap_s": 0.5})
            wait_until(lambda: [r for r in audit_records(bastion.database, "tools/call") if r["route"] == "gone"])
            bastion.config["routes"] = [bastion.config["routes"][0], {"name": "fresh", **http_route}]
            bastion.write_config()
            bastion.proc.send_signal(signal.SIGHUP)
            swapped = wait_until(lambda: _reloads(bastion)[1:], timeout_s=20)[0]
            assert swapped["arguments"]["routes"] == {"added": ["fresh"], "removed": ["gone"], "changed": []}
            assert not slow.done()
            unknown = _call(bastion, "nope", gone, "read_page", {})
            withdrawn = _call(bastion, "gone", gone, "read_page", {})
            assert (withdrawn.status_code, withdrawn.json()) == (unknown.status_code, unknown.json()) == (
                404, {"error": "not_found"})  # fmt: skip
            finished = slow.result(timeout=20)
        assert finished.status_code == 200, finished.text
        assert "done; key" in json.dumps(finished.json()["result"])  # the call in flight finished
        page = _call(bastion, "fresh", bastion.mint("ann", "fresh"), "read_page", {})  # the added route serves
        assert page.status_code == 200, page.text
        assert "Weather today" in json.dumps(page.json()["result"]), page.text

        time_route = {"name": "time", "stdio": {"command": str(BIN / "mcp-server-time"),
                                                "args": ["--local-timezone", "UTC"]}}  # fmt: skip
        bastion.config["routes"][1] = time_route  # a stdio route, its process started by the reload
        bastion.write_config()
        bastion.proc.send_signal(signal.SIGHUP)
        started = wait_until(lambda: _reloads(bastion)[2:], timeout_s=40)[0]
        assert started["arguments"]["routes"] == {"added": ["time"], "removed": ["fresh"], "changed": []}
        time_token = bastion.mint("ann", "time")
        answer = _call(bastion, "time", time_token, "get_current_time", {"timezone": "UTC"})
        assert answer.status_code == 200, answer.text
        assert "result" in answer.json(), answer.text
        assert '"timezone": "UTC"' in answer.json()["result"]["content"][0]["text"]
        leaky = bastion.mint("ann", "leaky")
        assert _allowed(bastion, leaky)

        bastion.config["routes"].append({"name": "broken", "stdio": {"command": str(tmp_path / "no-such-server")}})
        bastion.write_config()
        bastion.proc.send_signal(signal.SIGHUP)
        refused = wait_until(lambda: _reloads(bastion)[3:], timeout_s=20)[0]
        assert (refused["decision"]["effect"], refused["decision"]["reason"]) == ("deny", "reload_refused")
        assert "broken" in refused["arguments"]["error"]
        assert "routes" not in refused["arguments"]
        assert _allowed(bastion, leaky)  # the running routes keep serving
        answer = _call(bastion, "time", time_token, "get_current_time", {"timezone": "UTC"})
        assert answer.status_code == 200, answer.text
        assert "result" in answer.json(), answer.text
        assert _call(bastion, "broken", leaky, "read_page", {}).status_code == 404
        health = httpx2.get(f"{bastion.base_url}/healthz", timeout=5).json()
        assert set(health["routes"]) == {"leaky", "time"}

        with httpx2.Client(timeout=10) as http:  # a changed route ends the sessions opened before the change
            url = bastion.url("leaky")
            before = open_session(http, url, leaky)
            listing = rpc("tools/list", {}, rpc_id=2)
            assert legacy_post(http, url, leaky, before, listing).status_code == 200
            bastion.config["routes"] = [{**bastion.config["routes"][0], "title": "Leaky, renamed"},
                                        bastion.config["routes"][1]]  # fmt: skip
            bastion.write_config()
            bastion.proc.send_signal(signal.SIGHUP)
            changed = wait_until(lambda: _reloads(bastion)[4:], timeout_s=20)[0]
            assert changed["arguments"]["routes"] == {"added": [], "removed": [], "changed": ["leaky"]}
            assert legacy_post(http, url, leaky, before, listing).status_code == 404  # MCP: initialize again
            after = open_session(http, url, leaky)
            assert legacy_post(http, url, leaky, after, listing).status_code == 200
        assert bastion.proc.poll() is None
    assert bastion.cli("audit", "verify", "--config", str(bastion.config_path)).returncode == 0
