"""``server.argument_limits`` (how large a call's ``arguments`` may be) and ``limits:`` (rates and quotas).

``limits:`` is a list of rates and quotas (issue 14)::

    limits:
      - name: deploys-per-person
        match: {route: ci, tool: deploy}
        rate: 5/minute           # at most 5 in any minute, per principal (kept in memory)
      - name: exports-per-day
        match: {tool: export_customers, group: support}
        quota: 500/day           # kept in the data directory: a restart does not reset it
        per: principal           # principal | client | route | tool | global

A policy can carry its own: ``@rate("10/minute")`` / ``@quota("500/day")`` on a permit, counted
per principal and policy unless ``@rate_per("client")`` (or route, tool, global) says otherwise.

``server.argument_limits``: how large a call's ``arguments`` may be before Bastion refuses it.

A well-formed but hostile call (an object of 150,000 members, an array of 400,000
elements) costs CPU in every step that touches the arguments: the policy decision, the
digest, redaction, the audit record. These limits bound that work: the transport stage
measures ``params.arguments`` once, right after the body is parsed, and refuses a call
over any limit with JSON-RPC ``-32602`` (HTTP 400) and a deny record that keeps the
arguments' digest and the measured sizes, not the arguments
(``bastion.transport.sizes``). The defaults sit far above what real tools send; the
body itself is capped first by ``server.max_body_bytes``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import SecretRef, _Model, check_service_url, url_with_password
from bastion.identity.durations import parse_duration
from bastion.limits.rates import parse_rate

__all__ = [
    "ArgumentLimits",
    "CounterSettings",
    "DataFlowSettings",
    "LimitKey",
    "LimitMatch",
    "LimitSettings",
    "SessionCaps",
]


class ArgumentLimits(_Model):
    """Limits on one request's ``params.arguments`` (any JSON value).

    - ``max_depth``: arrays and objects nested in each other; the arguments object itself is 1
      (at most 60: the whole message may nest 64 deep, ``bastion.transport.checks.MAX_DEPTH``);
    - ``max_members``: members of any one object;
    - ``max_elements``: elements of any one array;
    - ``max_string_chars``: characters (code points) of any one string, object keys included;
    - ``max_nodes``: values in all (every object, array, string, number, boolean, null).
    """

    max_depth: int = Field(default=32, ge=1, le=60)
    max_members: int = Field(default=10_000, ge=1)
    max_elements: int = Field(default=100_000, ge=1)
    max_string_chars: int = Field(default=1_048_576, ge=1)
    max_nodes: int = Field(default=250_000, ge=1)


LimitKey = Literal["principal", "client", "route", "tool", "global"]
"""What a limit counts separately (``bastion.limits.rates.LIMIT_KEYS``)."""


class LimitMatch(_Model):
    """Which calls a limit applies to: every given field must match (none given: every call).
    ``route`` and ``tool`` name the call's route and tool (or resource / prompt name), ``group``
    a group of the principal, ``principal`` its subject, ``client`` its OAuth client id."""

    route: str | None = None
    tool: str | None = None
    group: str | None = None
    principal: str | None = None
    client: str | None = None


class LimitSettings(_Model):
    """One entry of ``limits:`` (issue 14): ``name`` (in the refusal and the audit record),
    ``match``, exactly one of ``rate`` (``20/minute``: kept in memory) or ``quota``
    (``500/day``: kept in the data directory, so a restart does not reset it), and ``per``
    (``LimitKey``). See ``bastion.limits.rates`` for how a rate is written and counted."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    match: LimitMatch = LimitMatch()
    rate: str | None = None
    quota: str | None = None
    per: LimitKey = "principal"

    @model_validator(mode="after")
    def _one_measure(self) -> LimitSettings:
        if (self.rate is None) == (self.quota is None):
            raise ValueError(f"limit {self.name}: give exactly one of rate (e.g. 20/minute) or quota (e.g. 500/day)")
        parse_rate(self.measure)  # ValueError: pydantic's error, naming the place
        return self

    @property
    def measure(self) -> str:
        """The rate or quota as written."""
        return self.rate if self.rate is not None else self.quota or ""

    @property
    def durable(self) -> bool:
        """A quota: counted in the durable store."""
        return self.quota is not None


_REDIS = ("redis", "rediss")
_REDIS_FORM = "redis://host:port/db or rediss://..."


class CounterSettings(_Model):
    """``counters:``: where rates and quotas are counted. Without ``redis_url``, rates in memory and
    quotas in the data directory (one process). With it, both in that Redis
    (``redis://host:port/db``, ``rediss://`` for TLS; a password only by reference,
    ``redis_password: {env: NAME}``), so several Bastion processes enforce one limit together.
    When Redis cannot be reached during a call, the call is refused (503, ``limits_unavailable``,
    recorded): limits fail closed."""

    redis_url: str | None = None
    redis_password: SecretRef | None = None
    prefix: str = Field(default="bastion:rate:", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _url(self) -> CounterSettings:
        if self.redis_url is None:
            if self.redis_password is not None:
                raise ValueError("counters.redis_password without counters.redis_url")
            return self
        check_service_url(self.redis_url, _REDIS, "counters.redis_url", _REDIS_FORM, "redis_password")
        return self

    def resolved_url(self) -> str | None:
        """The Redis URL with the password resolved into it, or ``None`` (embedded counters).
        Raises ``ConfigError`` when the password reference cannot be resolved."""
        if self.redis_url is None:
            return None
        return url_with_password(self.redis_url, self.redis_password)


def _seconds(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value  # ValueError: pydantic's error


class SessionCaps(_Model):
    """``session_caps:`` (and a route's own ``session_caps:``, which replaces it for that route):
    the most one session may do (issue 14). Each cap is optional (absent: no cap):

    - ``calls``: calls (``tools/call``, ``resources/read``, ``prompts/get``) a policy permitted;
    - ``destructive_calls``: of those, calls of tools whose risk is ``destructive``;
    - ``distinct_tools``: different tools called (a tool already called stays callable);
    - ``result_bytes``: bytes of answers sent to the client; a session over it is refused its
      next call (the answer that crosses the cap is still delivered: its size is known only
      once it was sent).

    The session is the MCP session (one route). A call without one (the stateless 2026-07-28
    protocol) counts in the caller's activity on the route: the calls of one principal and OAuth
    client with no pause longer than ``window`` (seconds, default 1 h) between them.
    A refused call is HTTP 403 / JSON-RPC -32003 ``session_cap`` naming the cap, and recorded.
    """

    calls: int | None = Field(default=None, ge=1)
    destructive_calls: int | None = Field(default=None, ge=0)
    distinct_tools: int | None = Field(default=None, ge=1)
    result_bytes: int | None = Field(default=None, ge=1)
    window: int = Field(default=3600, ge=1, le=7 * 24 * 3600)

    _parse = field_validator("window", mode="before")(_seconds)

    @property
    def active(self) -> bool:
        """Whether any cap is set."""
        return any(v is not None for v in (self.calls, self.destructive_calls, self.distinct_tools, self.result_bytes))


class DataFlowSettings(_Model):
    """``data_flow:``: where the labels of the tools a caller touched are kept, which Cedar sees as
    ``context.session_labels`` (a tool's labels are ``routes[].tools.<name>.labels``; issue 14).

    ``scope``:

    - ``client`` (default): per principal and OAuth client, across every route that client calls
      through Bastion. An MCP session belongs to one route (one upstream server), so this is the
      scope that sees an agent read private data through one server and post it through another;
    - ``session``: per MCP session, so per route (a call without a session falls back to
      ``client``);
    - ``principal``: per person or service account, across all their clients and routes.

    Labels are kept while the caller is active: they are forgotten once ``window`` (seconds,
    default 1 h) passes without a call in that scope (a ``session`` scope's labels end with
    the session). A fresh scope starts with no labels.
    """

    scope: Literal["session", "client", "principal"] = "client"
    window: int = Field(default=3600, ge=1, le=7 * 24 * 3600)

    _parse = field_validator("window", mode="before")(_seconds)
