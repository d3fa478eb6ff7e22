"""Audit: real traffic through the shared gateway, then the ``bastion audit`` CLI on its log.

The module first drives allowed and denied calls (official SDK client, both
protocols) and unauthenticated requests, then checks the hash chain, search,
tail, argument redaction, and that tampering with (a copy of) the SQLite
database is detected and located.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sqlite3
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from tests.e2e.conftest import Gateway
from tests.support.e2e_helpers import LEGACY_VERSION, PROTOCOLS, connect, modern_post, open_session, raw_headers, rpc

from bastion.audit.canonical import arguments_sha256

pytestmark = pytest.mark.e2e

GITHUB_TOKEN = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
PASSWORD = "hunter2-" + secrets.token_hex(8)
UNAUTHENTICATED = 3


def _cli(gateway: Gateway, *args: str, check: bool = True) -> Any:
    return gateway.bastion.cli("audit", *args, "--config", str(gateway.bastion.config_path), check=check)


def _search(gateway: Gateway, *filters: str) -> list[dict[str, Any]]:
    result = _cli(gateway, "search", *filters, "--json")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _unauthenticated_denials(gateway: Gateway) -> int:
    records = _search(gateway, "--route", "time", "--decision", "deny")
    return sum(1 for r in records if r["decision"]["reason"] == "unauthenticated")


async def _expect_denied(gateway: Gateway, mode: str, tool: str, arguments: dict[str, Any]) -> None:
    async with connect(gateway.url("notes"), gateway.token("bob", "notes"), mode) as bob:
        with pytest.raises(MCPError):
            await bob.call_tool(tool, arguments)


@pytest.fixture(scope="module")
def traffic(gateway: Gateway) -> dict[str, Any]:
    """Drive the traffic the tests below look for; return what was sent."""
    unauth_before = _unauthenticated_denials(gateway)
    deny_before = len(_search(gateway, "--subject", "bob", "--tool", "delete_note", "--decision", "deny"))
    added = {"name": "deploy-key", "text": f"temporary credential {GITHUB_TOKEN} for the deploy"}
    with_password = {"name": "db", "text": "database settings", "password": PASSWORD}

    async def drive() -> None:
        for mode in PROTOCOLS:
            await _expect_denied(gateway, mode, "delete_note", {"name": "runbook"})
            await _expect_denied(gateway, mode, "read_logs", {"env": "prod"})
        async with connect(gateway.url("notes"), gateway.token("alice", "notes"), "legacy") as alice:
            assert not (await alice.call_tool("add_note", added)).is_error
            await alice.call_tool("add_note", with_password)  # the upstream may reject the extra key

    asyncio.run(drive())
    with httpx2.Client(timeout=10) as http:
        for _ in range(UNAUTHENTICATED):
            response = modern_post(http, gateway.url("time"), None, "tools/list", {})
            assert response.status_code == 401
        bad = http.post(gateway.url("time"), json=rpc("tools/list", {}), headers=raw_headers("garbage.token.here"))
        assert bad.status_code == 401
    return {"added": added, "with_password": with_password, "unauth_before": unauth_before, "deny_before": deny_before}


def _wait_for(probe: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_audit_verify_ok_after_traffic(gateway: Gateway, traffic: dict[str, Any]) -> None:
    result = _cli(gateway, "verify", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")


def test_search_finds_bobs_denied_calls_with_policy_ids(gateway: Gateway, traffic: dict[str, Any]) -> None:
    records = _wait_for(lambda: _search(gateway, "--subject", "bob", "--decision", "deny"))
    assert records
    assert all(r["principal"]["sub"] == "bob" and r["decision"]["effect"] == "deny" for r in records)
    deletes = [r for r in records if r["target"] == "delete_note"]
    prod_logs = [r for r in records if r["target"] == "read_logs" and r["arguments"] == {"env": "prod"}]
    assert len(deletes) >= len(PROTOCOLS)
    assert len(prod_logs) >= len(PROTOCOLS)
    for record in deletes:
        assert record["decision"]["policy_ids"] == ["support-no-destructive"]
        assert record["decision"]["reason"] == "policy_denied"
        assert record["method"] == "tools/call"
        assert record["kind"] == "decision"
    for record in prod_logs:
        assert record["decision"]["policy_ids"] == ["support-logs-dev-only"]


def test_every_policy_denied_request_leaves_exactly_one_decision_record(
    gateway: Gateway, traffic: dict[str, Any]
) -> None:
    expected = traffic["deny_before"] + len(PROTOCOLS)
    count = _wait_for(
        lambda: (
            (n := len(_search(gateway, "--subject", "bob", "--tool", "delete_note", "--decision", "deny"))) >= expected
            and n
        )
    )
    assert count == expected


def test_a_denied_call_has_no_outcome_record(gateway: Gateway, traffic: dict[str, Any]) -> None:
    records = _wait_for(lambda: _search(gateway, "--subject", "bob", "--tool", "delete_note"))
    denied_ids = {r["decision_id"] for r in records if r["kind"] == "decision" and r["decision"]["effect"] == "deny"}
    assert denied_ids
    time.sleep(0.5)  # outcome records are queued, committed within milliseconds
    records = _search(gateway, "--subject", "bob", "--tool", "delete_note")
    outcomes = [r for r in records if r["decision_id"] in denied_ids and r["kind"] == "outcome"]
    assert not outcomes, f"{len(outcomes)} outcome record(s) for denied calls, e.g. {outcomes[0]}"


def test_every_unauthenticated_request_leaves_a_record(gateway: Gateway, traffic: dict[str, Any]) -> None:
    expected = traffic["unauth_before"] + UNAUTHENTICATED + 1
    count = _wait_for(lambda: (n := _unauthenticated_denials(gateway)) >= expected and n)
    assert count == expected
    records = [r for r in _search(gateway, "--route", "time", "--decision", "deny")
               if r["decision"]["reason"] == "unauthenticated"]  # fmt: skip
    assert all(r["principal"] is None for r in records)


def test_tail_shows_the_newest_records(gateway: Gateway, traffic: dict[str, Any]) -> None:
    result = _cli(gateway, "tail", "-n", "5", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(records) == 5
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs)
    assert seqs[-1] - seqs[0] == 4
    table = _cli(gateway, "tail", "-n", "3")
    assert table.returncode == 0
    assert table.stdout.strip()


def test_secret_arguments_are_redacted_but_digested(gateway: Gateway, traffic: dict[str, Any]) -> None:
    records = _wait_for(lambda: _search(gateway, "--subject", "alice", "--tool", "add_note", "--decision", "allow"))
    by_name = {r["arguments_sha256"]: r for r in records if r["kind"] == "decision"}
    added, with_password = traffic["added"], traffic["with_password"]

    token_record = by_name[arguments_sha256(added)]
    assert GITHUB_TOKEN not in json.dumps(token_record)
    assert "[REDACTED:github_token]" in token_record["arguments"]["text"]
    assert token_record["arguments"]["text"].startswith("temporary credential ")
    assert token_record["arguments"]["name"] == "deploy-key"

    password_record = by_name[arguments_sha256(with_password)]
    assert password_record["arguments"]["password"].startswith("[REDACTED")
    assert PASSWORD not in json.dumps(password_record)

    # Nowhere in the database, not even in other columns.
    with sqlite3.connect(f"file:{gateway.bastion.database}?mode=ro", uri=True) as conn:
        for (record,) in conn.execute("SELECT record FROM audit_events"):
            assert GITHUB_TOKEN not in record
            assert PASSWORD not in record


@pytest.fixture
def database_copy(gateway: Gateway, traffic: dict[str, Any], tmp_path: Path) -> Iterator[Path]:
    """A consistent copy of the live audit database (SQLite backup API; WAL content included)."""
    copy = tmp_path / "copy.db"
    source = sqlite3.connect(f"file:{gateway.bastion.database}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    yield copy
    shutil.rmtree(tmp_path, ignore_errors=True)


def _verify_copy(gateway: Gateway, copy: Path) -> Any:
    return gateway.bastion.cli("audit", "verify", "--db", str(copy), check=False)


def _middle(copy: Path) -> int:
    with sqlite3.connect(copy) as conn:
        low, high = conn.execute("SELECT min(seq), max(seq) FROM audit_events").fetchone()
    assert high - low >= 4, "not enough records to tamper with the middle of the chain"
    return int((low + high) // 2)


def test_tampering_by_update_is_detected(gateway: Gateway, database_copy: Path) -> None:
    assert _verify_copy(gateway, database_copy).returncode == 0  # control: the untouched copy verifies
    seq = _middle(database_copy)
    with sqlite3.connect(database_copy) as conn:
        (text,) = conn.execute("SELECT record FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        record = json.loads(text)
        record["route"] = "tampered-" + str(record["route"])
        conn.execute("UPDATE audit_events SET record = ? WHERE seq = ?", (json.dumps(record), seq))
    result = _verify_copy(gateway, database_copy)
    assert result.returncode != 0
    assert f"seq {seq}" in result.stdout, result.stdout
    assert "TAMPERED" in result.stdout


def test_tampering_by_delete_is_detected(gateway: Gateway, database_copy: Path) -> None:
    seq = _middle(database_copy)
    with sqlite3.connect(database_copy) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = ?", (seq,))
    result = _verify_copy(gateway, database_copy)
    assert result.returncode != 0
    assert f"seq {seq}" in result.stdout, result.stdout
    assert "deleted" in result.stdout


def test_tampering_by_rehashing_a_record_is_detected(gateway: Gateway, database_copy: Path) -> None:
    """An attacker who edits a record AND recomputes its own hash still breaks the link to the next one."""
    from bastion.audit.chain import record_hash

    seq = _middle(database_copy)
    with sqlite3.connect(database_copy) as conn:
        (text,) = conn.execute("SELECT record FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        record = json.loads(text)
        record["method"] = "ping"
        record["hash"] = record_hash(record)
        conn.execute(
            "UPDATE audit_events SET record = ?, hash = ? WHERE seq = ?", (json.dumps(record), record["hash"], seq)
        )
    result = _verify_copy(gateway, database_copy)
    assert result.returncode != 0
    assert f"seq {seq}" in result.stdout or f"seq {seq + 1}" in result.stdout, result.stdout


def test_session_deletes_and_refused_streams_are_recorded(gateway: Gateway) -> None:
    url, token = gateway.url("time"), gateway.token("alice", "time")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        headers = raw_headers(token, mcp_session_id=session, mcp_protocol_version=LEGACY_VERSION)
        assert http.delete(url, headers=headers).status_code == 200
        refused = http.get(url, headers={"accept": "text/event-stream", "mcp-session-id": session})
        assert refused.status_code == 401

    def recorded() -> list[dict[str, Any]] | None:
        records = [r for r in _search(gateway, "--route", "time") if r["kind"] == "decision"]
        deletes = [r for r in records if r["method"] == "session/delete" and r["session"] == session]
        refusals = [r for r in records if r["method"] == "stream/open" and r["decision"]["reason"] == "unauthenticated"]
        return deletes + refusals if deletes and refusals else None

    found = _wait_for(recorded)
    assert {r["decision"]["effect"] for r in found} == {"allow", "deny"}
    assert any(r["principal"] and r["principal"]["sub"] == "alice" for r in found if r["method"] == "session/delete")
