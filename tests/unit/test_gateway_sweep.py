"""``Gateway.sweep``, the housekeeping the gateway runs every minute, called with an injected time:
revocations of expired tokens are deleted, the verifier's cache lets go of expired tokens, idle
sessions are dropped, and one failing step does not stop the others."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion import Gateway, parse_config

NOW = 1_700_000_000


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway built in-process (not started: nothing listens, no upstream is reached)."""
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);')
    config = parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "policy": {"files": ["p.cedar"]},
            "identity": {"authorization_server": {"enabled": False}},
            "routes": [{"name": "echo", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True}}],
        },
        base_dir=tmp_path,
    )
    built = Gateway(config)
    yield built
    await built.stop()


def _revoked_rows(gateway: Gateway) -> list[str]:
    with sqlite3.connect(gateway.database) as db:
        return sorted(row[0] for row in db.execute("SELECT jti FROM revoked_tokens"))


async def test_a_sweep_deletes_expired_revocations_and_cached_verifications(gateway: Gateway) -> None:
    audience = gateway.config.resource_uri(gateway.config.routes[0])
    minted = {
        name: gateway.issuer.mint(sub=name, audience=audience, ttl_s=ttl, now=NOW)
        for name, ttl in (("short", 60), ("long", 3600), ("short-revoked", 60), ("long-revoked", 3600))
    }
    for name in ("short", "long"):
        gateway.verifier.verify(minted[name].token, audience, now=NOW + 1)
    for name in ("short-revoked", "long-revoked"):
        await gateway.revocations.revoke(minted[name].claims["jti"], minted[name].claims["exp"], now=NOW + 1)
    assert gateway.verifier.cached == 2
    assert len(_revoked_rows(gateway)) == 2

    await gateway.sweep(NOW + 30)  # nothing has expired yet
    assert gateway.verifier.cached == 2
    assert len(_revoked_rows(gateway)) == 2

    await gateway.sweep(NOW + 120)
    assert gateway.verifier.cached == 1
    assert _revoked_rows(gateway) == [minted["long-revoked"].claims["jti"]]
    assert gateway.revocations.is_revoked(minted["long-revoked"].claims["jti"])
    assert gateway.verifier.verify(minted["long"].token, audience, now=NOW + 121).sub == "long"


async def test_a_failing_step_is_logged_and_the_others_still_run(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    audience = gateway.config.resource_uri(gateway.config.routes[0])
    gateway.verifier.verify(gateway.issuer.mint(sub="a", audience=audience, ttl_s=60, now=NOW).token, audience, now=NOW)
    await gateway.revocations.close()  # every revocation query now raises
    with caplog.at_level(logging.WARNING, logger="bastion.gateway"):
        await gateway.sweep(NOW + 120)
    assert "sweeping expired revocations failed" in caplog.text
    assert gateway.verifier.cached == 0


async def test_a_sweep_drops_sessions_idle_at_the_wall_clock_time_it_is_given(gateway: Gateway) -> None:
    idle_s = gateway.config.server.session_idle_s
    session = await gateway.sessions.create("echo", "https://issuer.test\x1falice")
    await gateway.sweep(session.last_seen + idle_s - 1)
    assert await gateway.sessions.get(session.id, "echo", "https://issuer.test\x1falice") is not None
    await gateway.sweep(time.time() + idle_s + 1)
    assert await gateway.sessions.get(session.id, "echo", "https://issuer.test\x1falice") is None
