"""``bastion approvals list | show | stats`` over a populated SQLite store, and ``approve | deny``
against a stand-in gateway (a tiny HTTP server) or none at all, through typer's CliRunner."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.approvals import ApprovalBinding, ApprovalRequest, ApprovalStatus
from bastion.approvals.store_sqlite import SQLiteApprovalStore
from bastion.cli.app import app
from bastion.config import load_config
from bastion.identity import RevocationList, SigningKeys, TokenVerifier

runner = CliRunner()
REQUESTER = "https://bastion.test\x1falice"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _write_config(tmp_path: Path, port: int) -> Path:
    policy = tmp_path / "policy.cedar"
    policy.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    config = {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": port},
        "policy": {"files": [str(policy)]},
        "routes": [{"name": "docs", "http": {"url": "https://docs.example/mcp"}}],
    }
    path = tmp_path / "bastion.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def _request(id_: str, status: ApprovalStatus, *, now: float, age_s: float, decided_after_s: float | None = None,
             expires_in_s: float = 600.0, tool: str = "delete_page") -> ApprovalRequest:  # fmt: skip
    created = now - age_s
    decided = None if decided_after_s is None else created + decided_after_s
    return ApprovalRequest(
        id=id_,
        kind="review",
        binding=ApprovalBinding(REQUESTER, "docs", tool, "ab" * 32, "policy-v1"),
        requester_label="alice@example.com",
        client_id="claude-desktop",
        arguments={"page": "Home", "note": "[red]not markup[/]"},
        risk="destructive",
        classification="internal",
        policy_ids=("needs-review", "docs-writers"),
        decision_id=f"decision-{id_}",
        created_at=created,
        expires_at=now + expires_in_s,
        status=status,
        decided_at=decided,
        approver=None if decided is None else "bob@example.com",
        approver_key=None if decided is None else "https://bastion.test\x1fbob",
        reason="" if decided is None else "looked at it",
        consumed_at=now - 5 if status == "consumed" else None,
        consumed_by="decision-later" if status == "consumed" else None,
    )


@pytest.fixture
def requests() -> tuple[ApprovalRequest, ...]:
    """Six requests, one of each kind of state, timed from now (when the test runs, not when the
    module was imported: a whole-suite run takes minutes)."""
    now = time.time()
    return (
        _request("req-open", "pending", now=now, age_s=60, expires_in_s=600),
        _request("req-stale", "pending", now=now, age_s=1200, expires_in_s=-10, tool="drop_space"),
        _request("req-approved", "approved", now=now, age_s=300, decided_after_s=30),
        _request("req-denied", "denied", now=now, age_s=400, decided_after_s=90),
        _request("req-consumed", "consumed", now=now, age_s=500, decided_after_s=60),
        _request("req-expired", "expired", now=now, age_s=5000, expires_in_s=-4000),
    )


async def _populate(database: Path, requests: tuple[ApprovalRequest, ...]) -> None:
    async with SQLiteApprovalStore(database) as store:
        for request in requests:
            await store.create(request)


@pytest.fixture
def config(tmp_path: Path, requests: tuple[ApprovalRequest, ...]) -> Path:
    """A configuration whose gateway port nobody listens on, its store holding ``requests``."""
    path = _write_config(tmp_path, _free_port())
    asyncio.run(_populate(tmp_path / "data" / "bastion.db", requests))
    return path


def _invoke(*args: str) -> Any:
    return runner.invoke(app, ["approvals", *args], env={"COLUMNS": "300"})


# list, show, stats


def test_list_shows_pending_requests_only_by_default_and_a_stale_one_as_expired(config: Path) -> None:
    result = _invoke("list", "--config", str(config))
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│ req-" in line}
    assert set(rows) == {"req-open", "req-stale"}
    open_row = [cell.strip() for cell in rows["req-open"].split("│")[1:-1]]
    assert open_row[:8] == ["req-open", "pending", "review", "alice@example.com", "claude-desktop", "docs",
                            "delete_page", "destructive"]  # fmt: skip
    assert open_row[9] == "in 10m"
    stale_row = [cell.strip() for cell in rows["req-stale"].split("│")[1:-1]]
    assert stale_row[1] == "pending"  # as stored: the gateway marks it within seconds
    assert stale_row[9] == "expired"


def test_list_all_is_newest_first_and_json_has_every_field(config: Path, requests: tuple[ApprovalRequest, ...]) -> None:
    table = _invoke("list", "--status", "all", "--config", str(config))
    assert table.exit_code == 0, table.output
    ids = [line.split("│")[1].strip() for line in table.stdout.splitlines() if "│ req-" in line]
    assert ids == ["req-open", "req-approved", "req-denied", "req-consumed", "req-stale", "req-expired"]

    result = _invoke("list", "--status", "consumed", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.stdout)
    expected = requests[4]
    assert item == {
        "id": "req-consumed", "kind": "review", "status": "consumed", "requester": REQUESTER, "route": "docs",
        "tool": "delete_page", "arguments_sha256": "ab" * 32, "policy_version": "policy-v1",
        "requester_label": "alice@example.com", "client_id": "claude-desktop",
        "arguments": {"page": "Home", "note": "[red]not markup[/]"}, "risk": "destructive",
        "classification": "internal", "policy_ids": ["needs-review", "docs-writers"],
        "decision_id": "decision-req-consumed", "created_at": expected.created_at,
        "expires_at": expected.expires_at, "decided_at": expected.decided_at, "approver": "bob@example.com",
        "approver_key": "https://bastion.test\x1fbob", "reason": "looked at it", "consumed_at": expected.consumed_at,
        "consumed_by": "decision-later",
    }  # fmt: skip
    assert result.stdout.isascii()  # control characters escaped, never sent to the terminal raw


def test_list_limit_and_an_empty_status(config: Path, tmp_path: Path) -> None:
    limited = _invoke("list", "--status", "all", "--limit", "2", "--json", "--config", str(config))
    assert [item["id"] for item in json.loads(limited.stdout)] == ["req-open", "req-approved"]
    empty_dir = tmp_path / "other"
    empty_dir.mkdir()
    fresh = _write_config(empty_dir, _free_port())
    result = _invoke("list", "--config", str(fresh))
    assert result.exit_code == 0, result.output
    assert "no pending approval requests" in result.stdout
    assert not (empty_dir / "data").exists()  # reading creates nothing
    assert json.loads(_invoke("list", "--json", "--config", str(fresh)).stdout) == []


def test_show_prints_every_field_and_the_arguments(config: Path, requests: tuple[ApprovalRequest, ...]) -> None:
    result = _invoke("show", "req-denied", "--config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[: lines.index("arguments:")]}
    assert fields["id"] == "req-denied"
    assert fields["status"] == "denied"
    assert fields["requester"] == "alice@example.com"
    assert fields["requester key"] == "https://bastion.test\\x1falice"  # the separator shown, not sent raw
    assert fields["tool"] == "delete_page"
    assert fields["policies"] == "needs-review, docs-writers"
    assert fields["decision id"] == "decision-req-denied"
    assert fields["approver"] == "bob@example.com"
    assert fields["reason"] == "looked at it"
    assert fields["consumed (UTC)"] == "-"
    decided = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(requests[3].decided_at or 0))
    assert fields["decided (UTC)"] == decided
    arguments = "\n".join(lines[lines.index("arguments:") + 1 :])
    assert json.loads(arguments) == {"page": "Home", "note": "[red]not markup[/]"}  # printed, not rendered


def test_show_json_and_an_unknown_id(config: Path) -> None:
    result = _invoke("show", "req-open", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["id"] == "req-open"
    assert shown["decided_at"] is None
    unknown = _invoke("show", "no-such-request", "--config", str(config))
    assert unknown.exit_code == 1
    assert "no approval request no-such-request" in unknown.stderr


def test_stats_counts_by_status_and_median_time_to_decision(config: Path) -> None:
    result = _invoke("stats", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "counts": {"pending": 2, "approved": 1, "denied": 1, "expired": 1, "consumed": 1},
        "median_decision_s": pytest.approx(60.0),  # of 30, 90 and 60
    }
    text = _invoke("stats", "--config", str(config))
    assert text.exit_code == 0, text.output
    assert "pending:   2" in text.stdout
    assert "median time to decision: 60.0 s" in text.stdout


# approve and deny through the gateway


@dataclass
class StandInGateway:
    """Answers every POST with ``status`` and ``body``; keeps what it was sent."""

    status: int
    body: dict[str, Any]
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def stand_in() -> Iterator[tuple[StandInGateway, int]]:
    gateway = StandInGateway(200, {})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            gateway.received.append(
                (self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
            )
            payload = json.dumps(gateway.body).encode()
            self.send_response(gateway.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _verified(config: Path, token: str) -> Any:
    settings = load_config(config)
    keys = SigningKeys.load_or_create(settings.data_dir, verify_window_s=settings.identity.max_token_ttl)
    with RevocationList(settings.data_dir / "bastion.db") as revocations:
        verifier = TokenVerifier(issuer=settings.issuer, keys=keys, revocations=revocations)
        return verifier.verify(token, settings.resource_uri(settings.routes[0]))


def test_approve_posts_the_decision_with_a_token_for_the_approver(
    tmp_path: Path, stand_in: tuple[StandInGateway, int]
) -> None:
    gateway, port = stand_in
    config = _write_config(tmp_path, port)  # the gateway's own base URL, no --url
    gateway.body = {"approval": {"id": "req-open", "status": "approved", "tool": "delete_page", "route": "docs",
                                 "requester": "alice@example.com"}}  # as ApprovalPages.view  # fmt: skip
    result = _invoke("approve", "req-open", "--reason", "checked the page", "--as", "bob", "--email", "bob@example.com",
                     "--group", "docs-admins", "--group", "oncall", "--config", str(config))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "approved req-open (delete_page on docs for alice@example.com)"
    [(path, headers, body)] = gateway.received
    assert path == "/portal/api/approvals/req-open"
    assert json.loads(body) == {"decision": "approve", "reason": "checked the page"}
    scheme, token = headers["authorization"].split(" ", 1)
    assert scheme == "Bearer"
    principal = _verified(config, token)
    assert (principal.sub, principal.kind, principal.email) == ("bob", "User", "bob@example.com")
    assert principal.groups == ("docs-admins", "oncall")
    assert 0 < principal.expires_at - time.time() <= 300  # five minutes


def test_a_refused_deny_prints_the_gateways_reason_and_exits_1(
    tmp_path: Path, stand_in: tuple[StandInGateway, int]
) -> None:
    gateway, port = stand_in
    config = _write_config(tmp_path, _free_port())  # not the stand-in's port: --url says where
    gateway.status = 403
    gateway.body = {"error": "own_request", "error_description": "You cannot approve your own request"}
    result = _invoke("deny", "req-open", "--reason", "no", "--as", "alice", "--url", f"http://127.0.0.1:{port}/",
                     "--config", str(config))  # fmt: skip
    assert result.exit_code == 1
    assert "You cannot approve your own request" in result.stderr
    assert "own_request" in result.stderr
    [(path, _, body)] = gateway.received
    assert path == "/portal/api/approvals/req-open"
    assert json.loads(body) == {"decision": "deny", "reason": "no"}


@pytest.mark.parametrize("command", ["approve", "deny"])
def test_no_running_gateway_exits_1_and_says_decisions_need_it(config: Path, command: str) -> None:
    result = _invoke(command, "req-open", "--reason", "fine", "--as", "bob", "--config", str(config))
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert f"the gateway at {load_config(config).server.base_url} is not reachable" in message
    assert "decisions are made by the running gateway (start it with bastion serve)" in message


@pytest.mark.parametrize("command", ["approve", "deny"])
def test_a_reason_is_required(config: Path, command: str) -> None:
    missing = _invoke(command, "req-open", "--as", "bob", "--config", str(config))
    assert missing.exit_code == 2
    assert "--reason" in missing.stderr
    blank = _invoke(command, "req-open", "--reason", "  ", "--as", "bob", "--config", str(config))
    assert blank.exit_code == 2
    assert "an approver must say why" in blank.stderr
