"""The in-process rows: what the request path computes besides I/O, timed outside the server as the
gateway calls it (policy decision, audit bodies, seal and committed append, a call with 1 MB of
arguments, one upstream call); the authentication rows are in ``inprocess_auth``."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echo_upstream import ECHO_TOOL
from inprocess_auth import authentication_micro
from limits_cost import limits_figures
from pins_cost import pins_figures
from redact_cost import clean_rows, per_call
from scenario import ROUTE
from timers import per_call_us

if TYPE_CHECKING:
    from targets import Targets

    from bastion.config import BastionConfig
    from bastion.policy import PolicyEngine
    from bastion.principal import Principal


def microbench(targets: Targets) -> dict[str, float]:
    """What the request path computes besides I/O, in-process, as the gateway calls it: the policy
    decision, the token verification and the authenticate stage (see :func:`authentication_micro`),
    the two audit record bodies, the writer's seal, in µs; one committed append with each
    ``audit.synchronous`` setting, in ms; the CPU of one upstream call through ``HttpUpstream`` and
    through plain aiohttp (see :func:`_upstream_send_us`), in µs; the behavioural limits' added CPU
    (``limits_cost.limits_figures``), in µs; the definition scan of a 100-tool list, first and cached
    (``pins_cost.pins_figures``), and the result inspection of a clean 4 KB text result
    (``redact_cost.per_call``). Needs the default Bastion's
    configuration file and token, not its process, and the echo upstream running."""
    import uvloop

    from bastion.audit.build import decision_body, outcome_body
    from bastion.audit.chain import GENESIS_HASH, seal
    from bastion.config import load_config
    from bastion.identity import RevocationList, SigningKeys, TokenVerifier
    from bastion.ids import new_id
    from bastion.policy import PolicyEngine
    from bastion.transport.routes import tool_inventory

    bastion = targets.default
    config = load_config(bastion.config_path)
    keys = SigningKeys.load_or_create(config.data_dir, verify_window_s=config.identity.max_token_ttl)
    revocations = RevocationList(config.data_dir / "bastion.db", recheck_s=0.05)  # as the gateway opens it
    figures: dict[str, float] = {}
    try:
        verifier = TokenVerifier(
            issuer=config.issuer, keys=keys, revocations=revocations, leeway_s=config.identity.leeway_s
        )
        audience = config.resource_uri(config.route(ROUTE))
        principal = verifier.verify(bastion.token, audience)

        def uncached() -> object:
            verifier.clear_cache()
            return verifier.verify(bastion.token, audience)

        figures["verify_uncached_us"] = per_call_us(uncached, 300)
        figures["verify_cached_us"] = per_call_us(lambda: verifier.verify(bastion.token, audience), 2000)
        figures.update(authentication_micro(config, verifier, keys, revocations, bastion.token))

        engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
        tool = tool_inventory(config.route(ROUTE)).ref(ECHO_TOOL)  # as the route's catalog builds it
        arguments = {"message": "hello from wrk 1"}
        context = {
            "arguments": arguments,
            "client_id": principal.client_id or "",
            "session": "s" * 43,
            "time": int(time.time()),
            "ip": "127.0.0.1",
            "approved": False,
        }
        allowed = engine.decide(principal, "tools/call", tool, context)
        denied = engine.decide(principal, "tools/call", tool, {**context, "arguments": {"message": "my password"}})
        if allowed.effect != "allow" or denied.effect != "deny":
            raise RuntimeError(f"the benchmark policies decide wrongly: {allowed} / {denied}")
        figures["decide_us"] = per_call_us(lambda: engine.decide(principal, "tools/call", tool, context), 2000)
        messages = iter(itertools.count())  # a message never seen before: what a call with new arguments costs

        def uncached() -> object:
            fresh = {**context, "arguments": {"message": f"hello from wrk {next(messages)}"}}
            return engine.decide(principal, "tools/call", tool, fresh)

        figures["decide_uncached_us"] = per_call_us(uncached, 2000)
        figures.update(large_argument_ms(config, engine, principal))

        def decision() -> dict[str, Any]:  # as AuditStage._body builds it for an allowed tools/call
            return decision_body(
                route=ROUTE,
                method="tools/call",
                effect="allow",
                policy_ids=allowed.policy_ids,
                obligations=allowed.obligations,
                reason=None,
                policy_version=engine.version,
                arguments=arguments,
                principal=principal,
                target=str(ECHO_TOOL["name"]),
                session="s" * 43,
                decision_id=new_id(),
                store_arguments=config.audit.store_arguments,
            )

        body = decision()

        def outcome() -> dict[str, Any]:  # as AuditStage.record_outcome builds it
            return outcome_body(
                body,
                error=False,
                error_code=None,
                request_bytes=120,
                response_bytes=110,
                credential_kind="none",
                status=200,
                duration_ms=0.5,
            )

        figures["audit_build_us"] = per_call_us(decision, 2000)
        figures["audit_outcome_us"] = per_call_us(outcome, 2000)
        figures["audit_seal_us"] = per_call_us(lambda: seal(body, seq=1, prev_hash=GENESIS_HASH), 1000)
        for synchronous in ("full", "normal"):
            path = targets.workdir / f"micro-audit-{synchronous}.db"
            figures[f"audit_append_{synchronous}_ms"] = asyncio.run(_append_latency(path, decision, synchronous))
        figures.update(uvloop.run(_upstream_send_us(targets.direct_url)))  # the loop `bastion serve` runs on
        figures.update(asyncio.run(limits_figures()))  # two rates and one data-flow rule (issue 14)
        figures.update(asyncio.run(pins_figures()))  # definition scanning and pins (issue 15)
        text_result = {"content": [{"type": "text", "text": clean_rows()}]}
        figures["redact_4kb_us"] = asyncio.run(per_call(("secrets",), text_result, 20_000))  # result inspection
    finally:
        asyncio.run(revocations.close())
    return figures


async def _upstream_send_us(url: str) -> dict[str, float]:
    """CPU µs of this process per ``tools/call`` sent to the echo upstream at ``url`` and read back,
    one at a time on one kept-alive connection: through ``HttpUpstream.send`` (what the forward stage
    calls: connections opened to the addresses the egress guard checked, header filtering, capped
    read) and through a plain ``aiohttp`` session with a default connector (no guard, nothing of
    Bastion). Interleaved
    batches; the median of each. Their difference is what Bastion's client (aiohttp's protocol and
    request writer over its own pooled, guarded connections) saves or costs against aiohttp's."""
    import aiohttp

    from bastion.egress import EgressGuard
    from bastion.egress.allowlist import AllowList
    from bastion.upstream.http import HttpUpstream

    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-11-25",
    }
    initialize = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
    call = json.dumps(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}}
    ).encode()
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1"])) as guard:
        upstream = HttpUpstream(url, guard=guard, allow_http=True)
        plain = aiohttp.ClientSession(trust_env=False, skip_auto_headers=("User-Agent",))
        try:
            opened = await upstream.send(
                "POST",
                headers=headers,
                body=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize}).encode(),
            )
            await opened.aclose()
            session = opened.session_id

            async def guarded() -> None:
                response = await upstream.send("POST", headers=headers, body=call, session_id=session)
                await response.aclose()

            async def unguarded() -> None:
                sent = {**headers, "mcp-session-id": session or ""}
                async with plain.post(url, headers=sent, data=call, allow_redirects=False) as response:
                    await response.read()

            batches: dict[str, list[float]] = {"upstream_guarded_us": [], "upstream_plain_us": []}
            n = 500
            for _ in range(5):
                for key, send in (("upstream_guarded_us", guarded), ("upstream_plain_us", unguarded)):
                    await send()  # the connection is open and kept alive before timing
                    start = time.process_time()
                    for _ in range(n):
                        await send()
                    batches[key].append((time.process_time() - start) / n * 1e6)
        finally:
            await plain.close()
            await upstream.aclose()
    return {key: statistics.median(values) for key, values in batches.items()}


def large_argument_ms(config: BastionConfig, engine: PolicyEngine, principal: Principal) -> dict[str, float]:
    """CPU ms per ``tools/call`` whose arguments hold 1 MB, through every step that touches the
    arguments, called as the stages call them: parse the body (``parse_message``), the argument
    limits (``check_arguments``), the policy decision (``PolicyEngine.decide``) and the decision
    record (``decision_body``: canonical digest and redaction). ``large_text_ms``: one 1 MB string;
    ``large_records_ms``: 12,000 small objects (about 1 MB). Median of 5 batches of process CPU."""
    from bastion.audit.build import decision_body
    from bastion.transport.checks import parse_message
    from bastion.transport.routes import tool_inventory
    from bastion.transport.sizes import check_arguments

    tool = tool_inventory(config.route(ROUTE)).ref(ECHO_TOOL)
    name = str(ECHO_TOOL["name"])
    words = ("alpha", "beta", "note", "2024-05-01", "id=42", "path/to/file.txt", "Quick brown fox.")
    text = " ".join(words[i % len(words)] for i in range(150_000))[:1_000_000]
    rows = [{"id": i, "name": f"row {i}", "email": f"u{i}@example.com", "tags": ["a", "b"]} for i in range(12_000)]
    figures: dict[str, float] = {}
    for key, arguments in (("large_text_ms", {"message": text}), ("large_records_ms", {"message": "hi", "rows": rows})):
        params = {"name": name, "arguments": arguments}
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}).encode()

        def call(body: bytes = body) -> None:
            arguments = parse_message(body)["params"]["arguments"]
            check_arguments(arguments, config.server.argument_limits)
            context = {"arguments": arguments, "client_id": principal.client_id or "", "session": "s" * 43,
                       "time": int(time.time()), "ip": "127.0.0.1", "approved": False}  # fmt: skip
            decision = engine.decide(principal, "tools/call", tool, context)
            denied = decision.effect != "allow"
            decision_body(
                route=ROUTE, method="tools/call", effect=decision.effect, policy_ids=decision.policy_ids,
                obligations=decision.obligations, reason="policy_denied" if denied else None,
                policy_version=engine.version, arguments=arguments, principal=principal, target=name,
                session="s" * 43, decision_id="d" * 32, store_arguments=config.audit.store_arguments,
            )  # fmt: skip

        call()
        batches = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(10):
                call()
            batches.append((time.process_time() - start) / 10 * 1000)
        figures[key] = statistics.median(batches)
    return figures


async def _append_latency(path: Path, build: Callable[[], dict[str, Any]], synchronous: str) -> float:
    """Wall ms per ``await log.append`` one at a time (each its own committed transaction)."""
    from bastion.audit import SQLiteAuditLog

    async with SQLiteAuditLog(path, synchronous="normal" if synchronous == "normal" else "full") as log:
        await log.append(build())
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            await log.append(build())
        return (time.perf_counter() - start) / n * 1000
