"""The in-process authentication rows: the revocation-list check, token verification (Bastion's own
token and an external issuer's, cached and uncached) and the whole ``AuthenticateStage.run``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from scenario import GROUP, ROUTE
from timers import per_await_us, per_call_us

if TYPE_CHECKING:
    from bastion.config import BastionConfig
    from bastion.identity import RevocationList, SigningKeys, TokenVerifier
    from bastion.pipeline.context import Exchange
    from bastion.transport.routes import RouteRuntime

BENCH_IDP = "https://idp.bench.invalid"
"""The issuer of the in-process external token; no identity provider runs (its JWKS is served in-process)."""


def authentication_micro(
    config: BastionConfig, verifier: TokenVerifier, keys: SigningKeys, revocations: RevocationList, token: str
) -> dict[str, float]:
    """The authenticate stage's parts and whole, in µs: the revocation-list check alone, an external
    issuer's token (cached / uncached) and ``AuthenticateStage.run`` on a request bearing ``token``,
    one of Bastion's own (cached / uncached). ``verifier`` and ``revocations`` are built and opened
    as the gateway builds and opens them; no server runs. Raises ``RuntimeError`` if a token is refused."""
    principal = verifier.verify(token, config.resource_uri(config.route(ROUTE)))
    jti = principal.token_id
    if jti is None or revocations.is_revoked(jti):
        raise RuntimeError(f"the benchmark token has no jti or is revoked: {principal}")
    figures = {"revocation_check_us": per_call_us(lambda: revocations.is_revoked(jti), 5000)}
    figures.update(asyncio.run(_authentication_async(config, verifier, keys, revocations, token)))
    return figures


async def _authentication_async(
    config: BastionConfig, verifier: TokenVerifier, keys: SigningKeys, revocations: RevocationList, token: str
) -> dict[str, float]:
    """The async part of :func:`authentication_micro`, all on one event loop."""
    stage_cached, stage_uncached = await _authenticate_stage_us(config, verifier, token)
    external_cached, external_uncached = await _external_verify_us(config, keys, revocations)
    return {
        "stage_cached_us": stage_cached,
        "stage_uncached_us": stage_uncached,
        "verify_external_cached_us": external_cached,
        "verify_external_uncached_us": external_uncached,
    }


def _bench_route(config: BastionConfig) -> RouteRuntime:
    """The benchmark route as ``Gateway._route`` builds it, for what the authenticate stage reads."""
    from bastion.transport.routes import RouteRuntime

    settings = config.route(ROUTE)
    return RouteRuntime(
        settings=settings,
        resource_uri=config.resource_uri(settings),
        metadata_url=f"{config.server.base_url}/.well-known/oauth-protected-resource{settings.public_path}",
    )


def _bearer_exchanges(route: RouteRuntime, token: str, count: int) -> Iterator[Exchange]:
    """``count`` fresh exchanges of a ``tools/call`` POST with ``Authorization: Bearer token``, built now."""
    from bastion.pipeline.context import Exchange, HttpRequest

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}).encode()
    raw = (
        ("authorization", f"Bearer {token}"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    )
    request = HttpRequest("POST", route.path, dict(raw), raw, "127.0.0.1", body)
    return iter([Exchange(route=route, http=request) for _ in range(count)])


async def _authenticate_stage_us(config: BastionConfig, verifier: TokenVerifier, token: str) -> tuple[float, float]:
    """``await AuthenticateStage.run(exchange)`` as the gateway's pipeline calls it, on a fresh exchange
    each time (built before the timing), with the token's verification cached / uncached, in µs."""
    from bastion.pipeline.stages.authenticate import AuthenticateStage

    stage = AuthenticateStage(
        verifier, {item.issuer: frozenset(item.routes) for item in config.identity.external_issuers}
    )
    route = _bench_route(config)
    probe = next(_bearer_exchanges(route, token, 1))
    await stage.run(probe)
    if probe.principal is None or probe.principal.auth_method != "bastion_jwt":
        raise RuntimeError(f"the authenticate stage did not accept the benchmark token: {probe.principal}")
    n_cached, n_uncached, repeats = 2000, 300, 5
    cached = _bearer_exchanges(route, token, n_cached * repeats + 1)  # + 1: per_await_us's first call
    uncached = _bearer_exchanges(route, token, n_uncached * repeats + 1)

    async def run_uncached() -> None:
        verifier.clear_cache()
        await stage.run(next(uncached))

    return (
        await per_await_us(lambda: stage.run(next(cached)), n_cached, repeats),
        await per_await_us(run_uncached, n_uncached, repeats),
    )


async def _external_verify_us(
    config: BastionConfig, keys: SigningKeys, revocations: RevocationList
) -> tuple[float, float]:
    """``TokenVerifier.authenticate`` of an external issuer's ES256 token, cached / uncached, in µs.

    The issuer's JWKS is served in-process (a ``JWKSFetch`` answering the key set) and fetched once
    before the timing, so no identity provider runs and the figures are the per-request cost once
    the key set is cached (``jwks_cache_s``); a refetch is not timed."""
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from bastion.identity import ExternalIssuer, TokenVerifier
    from bastion.ids import new_id

    key = ECKey.generate_key("P-256", parameters={"kid": "bench-idp-1"}, private=True)
    jwks = {"keys": [dict(key.as_dict(private=False))]}
    idp = ExternalIssuer(
        issuer=BENCH_IDP,
        jwks_url=f"{BENCH_IDP}/jwks",
        audience="api://bastion-bench",
        algorithms=["ES256"],
        routes=(ROUTE,),
    )
    now = int(time.time())
    claims = {
        "iss": BENCH_IDP,
        "sub": "bench-ci",
        "aud": idp.audience,
        "iat": now,
        "exp": now + 3600,
        "jti": new_id(),
        "groups": [GROUP],
    }
    token = jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key)
    document = json.dumps(jwks).encode()

    async def jwks_fetch(url: str) -> bytes:
        return document

    verifier = TokenVerifier(
        issuer=config.issuer,
        keys=keys,
        revocations=revocations,
        external_issuers=[idp],
        leeway_s=config.identity.leeway_s,
        jwks_fetch=jwks_fetch,
    )
    principal = await verifier.authenticate(token, idp.audience)  # fetches the JWKS
    if principal.auth_method != "external_jwt":
        raise RuntimeError(f"the external token was not verified as external: {principal}")

    async def uncached() -> object:
        verifier.clear_cache()
        return await verifier.authenticate(token, idp.audience)

    return (
        await per_await_us(lambda: verifier.authenticate(token, idp.audience), 2000),
        await per_await_us(uncached, 300),
    )
