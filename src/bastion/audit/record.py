"""The audit record, version 1 (docs/architecture.md, "The audit record").

One request that reaches the decision stage produces TWO events in ONE hash chain:

- a ``decision`` event (``DecisionEvent``), appended with ``await log.append(...)``
  before anything is forwarded: who (``principal``), what (``method``, ``target``,
  ``arguments_sha256`` of the unredacted arguments, ``arguments`` redacted), the
  ``decision`` (effect, policy ids, obligations, ``reason`` code for a deny such as
  ``"policy_denied"`` or ``"unauthenticated"``) and any ``approval``. Its
  ``upstream`` and ``result`` are null. If it cannot be written the call is refused.
- an ``outcome`` event (``OutcomeEvent``), appended with ``log.append_nowait(...)``
  after the upstream answered (or failed): ``upstream`` (credential kind and
  principal, HTTP status, ``duration_ms``) and ``result`` (error flag and code,
  request/response sizes in bytes, redactions by rule, flags). It carries the SAME
  ``decision_id`` and repeats route, session, principal, method and target so that a
  search by subject or tool finds both halves. Its ``arguments*``/``decision`` are null.

Why two events rather than one row updated later: the chain is append-only, so the
record that authorised a call is sealed before the call happens and can never be
rewritten by the outcome; a crash between the two leaves a decision without an
outcome, which is itself evidence. A deny has no outcome event.

Stored records (what readers get back) are JSON objects with exactly the keys of
``RECORD_KEYS``; keys that do not apply to a kind are ``null``. The chain adds
``seq`` (1, 2, ...), ``prev_hash`` and ``hash`` (see ``chain``). ``time`` is RFC 3339
UTC with microseconds (``2026-05-09T07:35:25.123456Z``), so text order is time order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from bastion.audit.canonical import arguments_sha256
from bastion.audit.redact import redact
from bastion.principal import Principal

__all__ = [
    "RECORD_KEYS",
    "RECORD_VERSION",
    "Approval",
    "AuditEvent",
    "Decision",
    "DecisionEvent",
    "OutcomeEvent",
    "PrincipalInfo",
    "Result",
    "ResultInjection",
    "ResultVolume",
    "Upstream",
    "VolumeMeasures",
    "event_body",
    "utc_now",
]

RECORD_VERSION = 1
RECORD_KEYS = (
    "version", "kind", "seq", "id", "time", "decision_id", "trace_id", "route", "session",
    "principal", "method", "target", "arguments_sha256", "arguments", "decision", "approval",
    "upstream", "result", "prev_hash", "hash",
)  # fmt: skip
_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
_HEX64 = r"^[0-9a-f]{64}$"


def utc_now() -> str:
    """The current time as RFC 3339 UTC with microseconds, e.g. ``2026-05-09T07:35:25.123456Z``."""
    # isoformat is several times cheaper than strftime; naive UTC so it has no offset to strip.
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _new_id() -> str:
    return uuid.uuid4().hex


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PrincipalInfo(_Model):
    """The caller as recorded: the audit view of ``bastion.principal.Principal`` (no expiry, no scopes).

    ``idp`` is ``Principal.idp`` (who vouched for the subject, what policies see as
    ``principal.idp``); ``None`` only in records written before it was recorded.
    """

    kind: Literal["User", "ServiceAccount"]
    sub: str
    issuer: str
    idp: str | None = None
    auth_method: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    client_id: str | None = None
    token_id: str | None = None

    @classmethod
    def from_principal(cls, principal: Principal) -> PrincipalInfo:
        """Copy the audited fields of an authenticated ``Principal``."""
        return cls(
            kind=principal.kind, sub=principal.sub, issuer=principal.issuer, idp=principal.idp,
            auth_method=principal.auth_method, email=principal.email, groups=principal.groups,
            client_id=principal.client_id, token_id=principal.token_id,
        )  # fmt: skip


class Decision(_Model):
    """The authorization decision: ``effect``, deciding ``policy_ids``, ``obligations`` (policy annotations).

    ``reason`` is required for a deny: the stable error code of ``bastion.errors``
    (``"policy_denied"``, ``"unauthenticated"``, ``"rate_limited"`` ...).
    ``policy_version`` is ``PolicyEngine.version`` (SHA-256 of the loaded policies).
    ``argument_sizes`` is set only on the deny of a call over ``server.argument_limits``
    (reason ``arguments_too_large``): what was measured (depth, members, elements,
    string_chars, nodes) and the limit ``exceeded``; such a record keeps the arguments'
    digest but not the arguments. The key is left out of the record when it is not set.
    ``continues`` is set on a request that continues an earlier call (MCP 2026-07-28: a
    retry carrying the ``requestState`` of an ``input_required`` result, or a ``tasks/*``
    request of the tasks extension): the ``decision_id`` of the first call of the chain.
    Left out when not set, like ``argument_sizes``. ``shadow`` is what the shadow policy set
    (``policy.shadow_files``) would have decided, when that differs: ``effect``, ``policy_ids``,
    ``obligations``, ``errors``; never enforced, left out when alike or not configured.
    """

    effect: Literal["allow", "deny"]
    policy_ids: tuple[str, ...] = ()
    obligations: dict[str, JsonValue] = Field(default_factory=dict)
    reason: str | None = None
    policy_version: str | None = None
    argument_sizes: dict[str, JsonValue] | None = Field(default=None, exclude_if=lambda value: value is None)
    continues: str | None = Field(default=None, exclude_if=lambda value: value is None)
    shadow: dict[str, JsonValue] | None = Field(default=None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def _deny_has_reason(self) -> Decision:
        if self.effect == "deny" and not self.reason:
            raise ValueError("a deny needs a reason code")
        return self


class Approval(_Model):
    """The human approval a record is about (``bastion.approvals``): its ``id``, ``kind``
    (``review``/``confirm``), ``status`` at the time of the record (``pending``, ``approved``,
    ``denied``, ``expired``, ``consumed``), the ``approver`` (their email or name) and ``reason``
    once decided, ``time`` of the decision (RFC 3339), and ``arguments_sha256`` of the call it
    is bound to. On a call's decision record: the grant it consumed (or the request it waits
    for); on the approval's own records (``approval/requested``, ``approval/approved``, ...):
    that step."""

    id: str
    kind: str | None = None
    status: str | None = None
    approver: str | None = None
    reason: str | None = None
    time: str | None = Field(default=None, pattern=_TIME)
    arguments_sha256: str | None = Field(default=None, pattern=_HEX64)


class Upstream(_Model):
    """How the upstream was reached: credential kind and principal (never the secret), HTTP status, duration.

    ``credential_kind`` is e.g. ``"none"``, ``"oauth_user"``, ``"token_exchange"``,
    ``"secret_ref"``; ``status`` is ``None`` when no HTTP answer came (stdio, connect
    error); ``duration_ms`` is the wall time from forwarding to the last byte.
    """

    credential_kind: str
    credential_principal: str | None = None
    status: int | None = None
    duration_ms: float = Field(ge=0)


class VolumeMeasures(_Model):
    """A tool result's volume (``bastion.volume.Measures``): ``bytes`` of its compact JSON, text
    content ``blocks``, ``items`` of the top-level arrays of its ``structuredContent``."""

    bytes: int = Field(ge=0)
    blocks: int = Field(ge=0)
    items: int = Field(ge=0)


class ResultVolume(_Model):
    """The volume of a tool result far above its tool's usual (``bastion.pipeline.stages.volume``):
    its measures, the ``baseline`` they were checked against (the configured percentile of the
    last ``samples`` results of the route's tool), the measures ``exceeded``, whether it was
    ``withheld`` from the client, and ``result_sha256``: the SHA-256 (hex) of the upstream's result
    as compact JSON, the only trace of its content. ``anomalous`` is true on every such record (only
    anomalous results are recorded)."""

    bytes: int = Field(ge=0)
    blocks: int = Field(ge=0)
    items: int = Field(ge=0)
    baseline: VolumeMeasures
    samples: int = Field(ge=0)
    exceeded: tuple[Literal["bytes", "blocks", "items"], ...] = ()
    anomalous: bool
    withheld: bool
    result_sha256: str = Field(pattern=_HEX64)


RuleId = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
"""A content detector's rule id (``bastion.scan.content.RULES``: ``aws_access_key``, ``email`` ...)."""


class ResultInjection(_Model):
    """Instructions aimed at the model found in what came back (``bastion.scan.content``, kind
    ``injection``): how many of each rule (``rules``: rule id -> count) and how many texts were
    ``replaced`` by a notice (the route's ``results.injection: replace``; 0 when only flagged)."""

    rules: dict[RuleId, Annotated[int, Field(ge=1)]]
    replaced: int = Field(default=0, ge=0)


class Result(_Model):
    """What came back: ``error`` flag and code, sizes in bytes, redactions made, inspection flags.

    ``flags`` name what the answer was besides a plain result: ``input_required`` (an MCP
    2026-07-28 multi round-trip result; the retry's decision ``continues`` this call),
    ``task`` (a task was created: the tasks extension), ``volume_anomaly`` (a tool result
    far above its tool's usual volume: ``volume`` gives the measures; left out otherwise),
    ``redacted`` (secrets or personal data were replaced before the client saw them) and
    ``injection`` (instructions aimed at the model were found: ``injection``).

    ``redactions`` counts the values replaced (``bastion.pipeline.stages.redact``; a value in both a
    text block and ``structuredContent`` counts twice) and ``redacted`` gives them by rule id
    (``{"aws_access_key": 1, "email": 2}``), never the values; left out when nothing was redacted.
    """

    error: bool
    error_code: str | None = None
    request_bytes: int = Field(ge=0)
    response_bytes: int = Field(ge=0)
    redactions: int = Field(default=0, ge=0)
    flags: tuple[str, ...] = ()
    volume: ResultVolume | None = Field(default=None, exclude_if=lambda value: value is None)
    redacted: dict[RuleId, Annotated[int, Field(ge=1)]] | None = Field(
        default=None, exclude_if=lambda value: value is None
    )
    injection: ResultInjection | None = Field(default=None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def _redactions_add_up(self) -> Result:
        if self.redacted is not None and sum(self.redacted.values()) != self.redactions:
            raise ValueError("redactions must be the sum of redacted")
        return self


class _EventBase(_Model):
    version: Literal[1] = 1
    id: str = Field(default_factory=_new_id)
    time: str = Field(default_factory=utc_now, pattern=_TIME)
    trace_id: str | None = None
    route: str
    session: str | None = None
    principal: PrincipalInfo | None = None
    method: str
    target: str | None = None
    approval: Approval | None = None


class DecisionEvent(_EventBase):
    """The event written BEFORE forwarding (see module docstring); build it with ``create``."""

    kind: Literal["decision"] = "decision"
    decision_id: str = Field(default_factory=_new_id)
    arguments_sha256: str = Field(pattern=_HEX64)
    arguments: JsonValue = None
    decision: Decision

    @classmethod
    def create(
        cls, *, route: str, method: str, decision: Decision, arguments: Any = None,
        principal: Principal | None = None, target: str | None = None, session: str | None = None,
        decision_id: str | None = None, trace_id: str | None = None, approval: Approval | None = None,
        store_arguments: bool = True,
    ) -> DecisionEvent:  # fmt: skip
        """Build a decision event from the raw call.

        ``arguments`` are the UNREDACTED tool arguments (``{}`` if none): their digest
        is taken from them, and they are stored redacted, or not at all when
        ``store_arguments`` is false. Raises ``pydantic.ValidationError`` on bad fields.
        """
        stored = redact(arguments)[0] if store_arguments else None
        return cls(
            route=route, method=method, decision=decision, target=target, session=session,
            principal=PrincipalInfo.from_principal(principal) if principal else None,
            decision_id=decision_id or _new_id(), trace_id=trace_id, approval=approval,
            arguments_sha256=arguments_sha256(arguments), arguments=stored,
        )  # fmt: skip

    def outcome(self, *, result: Result, upstream: Upstream | None = None) -> OutcomeEvent:
        """The matching outcome event: same decision id, route, session, principal, method, target, approval."""
        return OutcomeEvent(
            decision_id=self.decision_id, trace_id=self.trace_id, route=self.route,
            session=self.session, principal=self.principal, method=self.method,
            target=self.target, approval=self.approval, upstream=upstream, result=result,
        )  # fmt: skip


class OutcomeEvent(_EventBase):
    """The event written AFTER the upstream answered; ``decision_id`` names its decision event."""

    kind: Literal["outcome"] = "outcome"
    decision_id: str
    upstream: Upstream | None = None
    result: Result


AuditEvent = DecisionEvent | OutcomeEvent


def event_body(event: AuditEvent) -> dict[str, Any]:
    """The record of ``event`` as a JSON-ready dict with every key of ``RECORD_KEYS`` except the chain's.

    ``seq``, ``prev_hash`` and ``hash`` are added by the log when it appends.
    """
    body: dict[str, Any] = dict.fromkeys(_BODY_KEYS)
    body.update(event.model_dump(mode="json"))
    return body


_BODY_KEYS = tuple(k for k in RECORD_KEYS if k not in {"seq", "prev_hash", "hash"})
