"""Stage 7, limits: rates, quotas and session caps on permitted calls, enforced before anything
is forwarded; and the call's data-flow labels marked (``bastion.limits.activity``).

Two sources (issue 14; ``bastion.config.limits``):

- the configuration's ``limits:``, each applying to the calls its ``match`` names, counted per
  principal, client, route, tool or globally (``per``);
- the deciding permits' own ``@rate("10/minute")`` / ``@quota("500/day")``, counted per principal
  and policy unless ``@rate_per`` names another key, so a limit can depend on anything Cedar sees.

A rate is counted by ``rates`` (``bastion.stores.counters.RateCounter``; in memory by default), a
quota by ``quotas`` (durable: the data directory's SQLite file by default, so a restart does not
reset it). Each is a sliding-window log, atomic per key in its store: a limit of N admits at most N
calls in any window, whatever the number of simultaneous requests. The first limit that refuses
ends the call with ``RateLimited`` (HTTP 429, ``Retry-After``, the limit's name in the JSON-RPC
error's data, a deny record); a store that cannot answer (Redis down) ends it with
``LimitsUnavailable`` (503, recorded): never forwarded uncounted. Limits counted before the
refusal keep that hit (a refused call may use up a unit of another limit: never more calls
admitted than a limit allows).

Then the session caps and data-flow labels (``activity``, ``bastion.limits.activity``): a cap
that refuses ends the call with ``SessionCapReached`` (-32003 ``session_cap``, recorded); a call
within them is counted and its tool's labels marked.

Counted: ``tools/call``, ``resources/read`` and ``prompts/get`` that a policy permitted. A call no
limit applies to costs one loop over the configured limits' matches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bastion.config.limits import LimitMatch, LimitSettings
from bastion.errors import BastionError, LimitsUnavailable, RateLimited
from bastion.limits.activity import SessionActivity
from bastion.limits.rates import Rate, parse_rate
from bastion.pipeline.context import Exchange
from bastion.policy import Decision, PolicyEngine
from bastion.principal import Principal
from bastion.stores.counters import RateCounter

__all__ = ["LimitsStage"]

logger = logging.getLogger(__name__)

LIMITED_ACTIONS = frozenset({"tools/call", "resources/read", "prompts/get"})


@dataclass(frozen=True, slots=True)
class _Limit:
    """One limit, ready to count: its name, rate, key kind, whether durable (a quota)."""

    name: str
    rate: Rate
    per: str
    durable: bool


class LimitsStage:
    """Count the call against every limit that applies; raise ``RateLimited`` at the first refusal,
    then against its session's caps (``activity``; ``SessionCapReached``).

    ``limits`` is ``config.limits``; ``engine`` gives the deciding policies' own ``@rate`` /
    ``@quota``; ``rates`` and ``quotas`` are the counters (``RateCounter``); ``activity`` the session
    caps and data-flow labels (``None``: none); ``clock`` epoch seconds.
    """

    name = "limits"

    def __init__(
        self,
        limits: Sequence[LimitSettings],
        *,
        engine: PolicyEngine,
        rates: RateCounter,
        quotas: RateCounter,
        activity: SessionActivity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configured = [(s.match, _Limit(s.name, parse_rate(s.measure), s.per, s.durable)) for s in limits]
        self._engine = engine
        self._by_policy_of = ""  # the policy set version _by_policy was read from (a hot reload changes it)
        self._by_policy: dict[str, list[_Limit]] = {}
        self._rates = rates
        self._quotas = quotas
        self._activity = activity if activity is not None and activity.active else None
        self._clock = clock

    async def run(self, exchange: Exchange) -> None:
        """Count the call (see the module docstring). Raises ``RateLimited``, ``SessionCapReached``,
        ``LimitsUnavailable``."""
        decision, principal = exchange.decision, exchange.principal
        if decision is None or not decision.allowed or principal is None or exchange.action not in LIMITED_ACTIONS:
            return
        await self._rates_and_quotas(exchange, principal, decision)
        if self._activity is not None:
            try:
                await self._activity.admit(exchange)
            except BastionError:
                raise
            except Exception as exc:
                logger.warning("counting session activity failed: %r", exc)
                raise LimitsUnavailable("Refused: the session's caps cannot be counted now; try again later") from exc

    async def _rates_and_quotas(self, exchange: Exchange, principal: Principal, decision: Decision) -> None:
        """Every configured and policy limit that applies, counted in turn; raises at the first refusal."""
        route, target = exchange.route.name, exchange.target or ""
        applying = [limit for match, limit in self._configured if _matches(match, principal, route, target)]
        if self._by_policy_of != self._engine.version:
            engine = self._engine
            self._by_policy = {p: _policy_limits(p, engine.obligations_of(p)) for p in engine.limited_policy_ids}
            self._by_policy_of = engine.version
        if self._by_policy:
            for policy_id in decision.policy_ids:
                applying.extend(self._by_policy.get(policy_id, ()))
        if not applying:
            return
        now = self._clock()
        for limit in applying:
            key = _key(limit, principal, route, target)
            counter = self._quotas if limit.durable else self._rates
            try:
                answer = await counter.hit(key, limit.rate.count, limit.rate.window_s, now=now)
            except Exception as exc:
                logger.warning("counting limit %s failed: %r", limit.name, exc)
                raise LimitsUnavailable(
                    f"Refused: the limit {limit.name} cannot be counted now; try again later"
                ) from exc
            if not answer.allowed:
                kind = "quota" if limit.durable else "rate limit"
                wait = max(1, math.ceil(answer.retry_after_s))
                raise RateLimited(
                    f"Refused by {kind} {limit.name} ({limit.rate.text}); retry in {wait} s",
                    limit=limit.name, rate=limit.rate.text, retry_after_s=answer.retry_after_s,
                )  # fmt: skip


def _matches(match: LimitMatch, principal: Principal, route: str, target: str) -> bool:
    return (
        (match.route is None or match.route == route)
        and (match.tool is None or match.tool == target)
        and (match.group is None or match.group in principal.groups)
        and (match.principal is None or match.principal == principal.sub)
        and (match.client is None or match.client == principal.client_id)
    )


def _policy_limits(policy_id: str, annotations: Mapping[str, str]) -> list[_Limit]:
    """A policy's own limits (``@rate``, ``@quota``, counted per ``@rate_per``; checked at load)."""
    per = annotations.get("rate_per", "principal")
    return [
        _Limit(f"policy:{policy_id}:{key}", parse_rate(annotations[key]), per, key == "quota")
        for key in ("rate", "quota")
        if key in annotations
    ]


def _key(limit: _Limit, principal: Principal, route: str, target: str) -> str:
    """The counter key: the limit's name and what it counts separately, joined by a separator no
    part can contain unescaped (``\\x1f``)."""
    part = {
        "principal": principal.key,
        "client": principal.client_id or "",
        "route": route,
        "tool": f"{route}\x1f{target}",
        "global": "",
    }[limit.per]
    return f"limit:{limit.name}\x1f{limit.per}\x1f{part}"
