"""Audit export, end to end (issue 17): a real gateway exports its committed records as calls are made,
to a rotated JSON-lines file, to a real rsyslog (RFC 5424 over TCP and over TLS) and to an OTLP/HTTP receiver; a
receiver that is stopped mid-run and started again still gets every record (at least once), while
the gateway goes on serving; a restart neither loses nor repeats a line of the file; two replicas on
one PostgreSQL log export each record once between them.

Real processes on loopback: the ledger MCP server, ``bastion serve``, ``bastion audit tail``,
Debian's ``rsyslogd`` with a private configuration (``make rsyslog``), and an OTLP receiver in the
test process that decodes each request with opentelemetry-proto.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.databases import POSTGRES_URL
from tests.support.e2e_helpers import modern_post, wait_until
from tests.support.ledger_server import ledger_server
from tests.support.log_receivers import RSYSLOG_OPENSSL, RSYSLOGD, OtlpReceiver, PrivateRsyslog
from tests.support.pki import make_pki

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""


@pytest.fixture
def ledger() -> Iterator[str]:
    with ledger_server() as (url, _):
        yield url


def _bastion(workdir: Path, ledger: str, *exports: dict[str, Any], **more: Any) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    return BastionProcess(workdir, {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "audit": {"export": list(exports)},
        "routes": [{"name": "ledger", "http": {"url": ledger, "allow_http": True, "allow": ["127.0.0.1"]}}],
        **more,
    })  # fmt: skip


def _calls(bastion: BastionProcess, token: str, n: int, start: int = 0) -> None:
    with httpx2.Client(timeout=10) as http:
        for i in range(start, start + n):
            params = {"name": "deploy", "arguments": {"service": f"svc-{i}", "env": "prod"}}
            assert modern_post(http, bastion.url("ledger"), token, "tools/call", params).status_code == 200


def _head(bastion: BastionProcess) -> int:
    with closing(sqlite3.connect(bastion.database)) as db:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM audit_events").fetchone()[0])


def _cursor(bastion: BastionProcess, name: str) -> int:
    path = bastion.workdir / "data" / f"audit-export-{name}.cursor"
    return int(json.loads(path.read_text())["seq"]) if path.exists() else 0


def _exported(path: Path) -> list[dict[str, Any]]:
    """Every line of the export file and its rotated files, oldest first."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [json.loads(line) for p in (*rotated, path) if p.exists() for line in p.read_text().splitlines()]


def test_the_file_export_holds_every_record_once_in_seq_order_across_a_restart(tmp_path: Path, ledger: str) -> None:
    bastion = _bastion(tmp_path / "gw", ledger,
                       {"kind": "file", "path": "exported/audit.jsonl", "max_bytes": 4096, "keep": 100})  # fmt: skip
    path = tmp_path / "gw" / "exported" / "audit.jsonl"  # relative to the configuration file
    with bastion:
        token = bastion.mint("rita", "ledger", "dev")
        _calls(bastion, token, 8)
        wait_until(lambda: len(_exported(path)) == _head(bastion) >= 16, timeout_s=15)
        tail = bastion.cli("audit", "tail", "-n", "1000", "--json", "--config", str(bastion.config_path)).stdout
    records = _exported(path)
    assert records == [json.loads(line) for line in tail.splitlines() if line.strip()]  # as `bastion audit tail`
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len(list(path.parent.glob("audit.jsonl.*"))) >= 2  # rotated, no record split
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"

    with bastion:  # a restart: the cursor resumes; nothing sent twice, nothing skipped
        _calls(bastion, bastion.mint("rita", "ledger", "dev"), 3, start=8)
        wait_until(lambda: len(_exported(path)) == _head(bastion) >= 22, timeout_s=15)
    assert [r["seq"] for r in _exported(path)] == list(range(1, _head(bastion) + 1))


@pytest.mark.skipif(not Path(RSYSLOGD).exists(), reason="rsyslogd is not installed: make rsyslog")
def test_rsyslog_stopped_mid_run_still_gets_every_record(tmp_path: Path, ledger: str) -> None:
    rsyslog = PrivateRsyslog(tmp_path / "rsyslog")
    bastion = _bastion(tmp_path / "gw", ledger,
                       {"kind": "syslog", "host": "127.0.0.1", "port": rsyslog.port, "tls": False})  # fmt: skip
    try:
        rsyslog.start()
        with bastion:
            token = bastion.mint("rita", "ledger", "dev")
            _calls(bastion, token, 3)
            wait_until(lambda: _cursor(bastion, "syslog") == _head(bastion) >= 6, timeout_s=15)
            rsyslog.stop()  # the receiver goes away mid-run, all sent so far accepted
            _calls(bastion, token, 4, start=3)  # the gateway keeps serving
            during = _head(bastion)
            wait_until(lambda: "audit export syslog" in bastion.log(), timeout_s=15)  # noticed, retrying
            rsyslog.start()
            _calls(bastion, token, 2, start=7)
            wait_until(lambda: set(rsyslog.seqs()) >= set(range(1, _head(bastion) + 1)), timeout_s=30)
        head = _head(bastion)  # the gateway stopped: its last records were exported as it stopped
        assert head > during >= 13
        wait_until(lambda: set(rsyslog.seqs()) >= set(range(1, head + 1)), timeout_s=10)
    finally:
        rsyslog.stop()
    seqs = rsyslog.seqs()
    assert set(seqs) == set(range(1, head + 1))  # every record, none from elsewhere
    messages = rsyslog.messages()
    assert all(m.startswith((b"<110>1 ", b"<108>1 ")) for m in messages)  # log audit, info or warning; RFC 5424
    assert b' bastion ' in messages[0]
    assert b"[bastion@32473 seq=" in messages[0]


def test_an_otlp_receiver_that_was_down_gets_every_record(tmp_path: Path, ledger: str) -> None:
    receiver = OtlpReceiver()
    bastion = _bastion(tmp_path / "gw", ledger, {"kind": "otlp", "endpoint": receiver.endpoint})
    try:
        receiver.start()
        with bastion:
            token = bastion.mint("rita", "ledger", "dev")
            _calls(bastion, token, 3)
            wait_until(lambda: _cursor(bastion, "otlp") == _head(bastion) >= 6, timeout_s=15)
            receiver.stop()
            _calls(bastion, token, 4, start=3)
            wait_until(lambda: "audit export otlp" in bastion.log(), timeout_s=15)
            receiver.start()
            wait_until(lambda: {r["seq"] for r in receiver.records} >= set(range(1, _head(bastion) + 1)), timeout_s=30)
        head = _head(bastion)
        wait_until(lambda: {r["seq"] for r in receiver.records} >= set(range(1, head + 1)), timeout_s=10)
        stored = {r["seq"]: r for r in (json.loads(line) for line in bastion.cli(
            "audit", "tail", "-n", "1000", "--json", "--config", str(bastion.config_path)).stdout.splitlines())}
    finally:
        receiver.stop()
    assert {r["seq"] for r in receiver.records} == set(range(1, head + 1))
    for record in receiver.records:
        assert json.loads(record["body"]) == stored[record["seq"]]
        assert record["hash"] == stored[record["seq"]]["hash"]
        assert record["event_name"] == f"bastion.audit.{stored[record['seq']]['kind']}"


@pytest.mark.skipif(not Path(RSYSLOG_OPENSSL).exists(), reason="rsyslog's TLS driver is not installed: make rsyslog")
def test_syslog_over_tls_checks_the_receivers_certificate(tmp_path: Path, ledger: str) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    rsyslog = PrivateRsyslog(tmp_path / "rsyslog", tls=pki)
    tls = {"kind": "syslog", "host": "127.0.0.1", "port": rsyslog.port, "tls": True}
    bastion = _bastion(tmp_path / "gw", ledger, {**tls, "ca_file": str(pki.ca_file)},
                       {**tls, "name": "untrusted"})  # the system's trust store: not this CA  # fmt: skip
    try:
        rsyslog.start()
        with bastion:
            _calls(bastion, bastion.mint("rita", "ledger", "dev"), 2)
            wait_until(lambda: _cursor(bastion, "syslog") == _head(bastion) >= 4, timeout_s=15)
            wait_until(lambda: "audit export untrusted" in bastion.log(), timeout_s=15)
            assert _cursor(bastion, "untrusted") == 0  # one destination failing holds back only itself
    finally:
        rsyslog.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in bastion.log()
    assert set(rsyslog.seqs()) == set(range(1, _head(bastion) + 1))


def test_replicas_on_postgresql_export_each_record_once_between_them(
    tmp_path: Path, ledger: str, schema: str
) -> None:
    receiver = OtlpReceiver().start()
    shared = {"server": {"public_url": "http://gateway.test"}, "stores": {"postgres": {"url": POSTGRES_URL,
                                                                                      "schema": schema}}}
    a, b = (_bastion(tmp_path / name, ledger, {"kind": "otlp", "endpoint": receiver.endpoint}, **shared)
            for name in ("a", "b"))  # fmt: skip
    try:
        with a:
            token = a.mint("rita", "ledger", "dev")  # b signs with a's key (not a shared store yet)
            (tmp_path / "b" / "data").mkdir(parents=True, mode=0o700)
            shutil.copy2(tmp_path / "a" / "data" / "signing-keys.json", tmp_path / "b" / "data")
            with b:
                for n in range(4):
                    _calls(a, token, 1, start=2 * n)
                    _calls(b, token, 1, start=2 * n + 1)
                wait_until(lambda: _shared_head(schema) >= 16, timeout_s=10)  # the last outcome committed
                wait_until(lambda: len(receiver.records) >= _shared_head(schema), timeout_s=20)
                time.sleep(1.5)  # a few more polls of both replicas: nothing comes twice
    finally:
        receiver.stop()
    assert sorted(r["seq"] for r in receiver.records) == list(range(1, _shared_head(schema) + 1))


def _shared_head(schema: str) -> int:
    async def head() -> int:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            sql = f'SELECT coalesce(max(seq), 0) FROM "{schema}".audit_events'  # noqa: S608 - the test's own name
            return int(await connection.fetchval(sql))
        finally:
            await connection.close()

    return asyncio.run(head())
