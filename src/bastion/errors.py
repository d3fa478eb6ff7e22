"""The one exception tree of Bastion.

Every error a request can meet carries three things: the HTTP status the
gateway answers with, the JSON-RPC error code put in the body, and a stable
string ``code`` that the audit log records. Foreign exceptions are mapped into
this tree with ``raise ... from exc`` at the place they occur. A message that
quotes what the client sent quotes at most ``ECHO_LIMIT`` characters of it
(``clip``).

    BastionError
    ├── ConfigError                 (start-up; never reaches a client)
    ├── TransportError              400  -32600  bad HTTP/JSON-RPC framing
    │   ├── ParseError              400  -32700
    │   ├── ArgumentsTooLarge       400  -32602  (over server.argument_limits)
    │   ├── InvalidArguments        200  -32602  (against the tool's inputSchema; a tool error from 2025-11-25)
    │   ├── BatchRejected           400  -32600
    │   ├── BodyTooLarge            413  -32600
    │   ├── BodyTimeout             408  -32600  (the body did not arrive within server.body_timeout_s)
    │   ├── HeaderMismatch          400  -32020  (MCP 2026-07-28 mirrored headers)
    │   ├── MissingCapability       400  -32021  (2026-07-28: needs a capability the client did not declare)
    │   ├── UnknownContinuation     400  -32602  (a requestState or task id not issued to this principal)
    │   ├── UnsupportedVersion      400  -32022  (with data.supported and data.requested)
    │   ├── UnsupportedMediaType    415  -32600
    │   ├── NotAcceptable           406  -32600
    │   ├── SessionRequired         400  -32600
    │   └── ForbiddenOrigin         403  -32600
    ├── AuthenticationError         401  -32001  (with WWW-Authenticate)
    ├── OAuthError                  400  (401 for invalid_client)  RFC 6749 section 5.2 error form
    ├── SessionNotFound             404  -32001
    ├── MethodNotFound              200  -32601  (404 on 2026-07-28: unknown or removed method)
    ├── PolicyDenied                200  -32003  (a JSON-RPC error naming the policy ids)
    │   ├── InsufficientScope       403  -32003  (step-up: WWW-Authenticate insufficient_scope)
    │   ├── ApprovalPending         200  -32003  (always a tool execution error: approval pending, its page)
    │   ├── ConfirmationRequired    200  -32042  (the requester confirms on Bastion's page: URL elicitation)
    │   ├── RateLimited             429  -32003  (a rate limit or quota: Retry-After, data names the limit)
    │   ├── SessionCapReached       200  -32003  (a session cap: data names the cap, its value, what was used)
    │   └── ApprovalRefused         200  -32003  (the approval the call waited for was denied or expired)
    ├── EgressDenied                403  -32003  (an outbound fetch refused: SSRF guard)
    ├── DefinitionQuarantined       200  -32003  (a tool, prompt or resource whose definition waits for an admin)
    │   └── RouteBlocked            200  -32003  (a definition's finding blocks the whole route until an admin acts)
    ├── DecisionRefused     403/404/409  -32603  (an approval decision someone may not make; portal, API)
    ├── LimitsUnavailable           503  -32603  (the store counting rates and quotas did not answer: fail closed)
    ├── RevocationsUnavailable      503  -32603  (the shared revocation list cannot be kept current: fail closed)
    ├── SessionsUnavailable         503  -32603  (the session store did not answer: fail closed)
    ├── ContinuationsUnavailable    503  -32603  (the continuation store did not answer: fail closed)
    ├── AuditUnavailable            503  -32603  (fail closed: nothing forwarded)
    ├── ShuttingDown                503  -32603  (the gateway stopped before the answer was complete: server.drain_s)
    ├── AnswerWithheld              500  -32603  (inspection withheld the answer to the client's request)
    │   └── ResultWithheld          200  -32603  (a tool result far above its usual volume: a tool error instead)
    ├── IdentityProviderError       502  -32603  (signing in through an OpenID Connect provider failed)
    ├── VaultError                  500  -32603  (a sealed token vault record does not open)
    ├── CheckpointInvalid           500  -32603  (a signed audit checkpoint does not verify: bastion audit verify)
    ├── UpstreamConnectionRequired  200  -32042  (MCP URL elicitation: connect the upstream first)
    ├── UpstreamAuthorizationError  502  -32603  (Bastion as OAuth client of an upstream's server failed)
    │   └── ConnectionExpired       502  -32603  (the refresh token was refused: connect again)
    └── UpstreamError               502  -32603
        ├── UpstreamUnavailable     503  -32603
        ├── TokenExchangeFailed     502  -32603  (RFC 8693: the STS refused or answered unusably)
        └── ListenerOverflow        502  -32603  (a stdio stream's listener fell too far behind)

``BastionError`` itself is the bug case: its ``code`` ``internal_error`` is what the
runner and the endpoint record for an unexpected exception (``Internal error in <stage>``);
every expected refusal has a class of its own above.

The status above is the one for a handshake-era (2025) request. A 2026-07-28 request is answered
with the status that protocol gives the JSON-RPC code (the SDK's ``mcp.shared.inbound.ERROR_CODE_HTTP_STATUS``:
400 for -32600, -32602, -32020, -32021, -32022; 404 for -32601), else the class's own:
``http_status(error, era)``.

Three exception classes live elsewhere on purpose; none reaches a client as itself:
``bastion.audit.canonical.NotCanonicalizable`` is a ``TypeError`` (as ``json`` raises for a
value it cannot write), so that the audit stage's ``except TypeError`` maps it to
``AuditUnavailable``; ``bastion.policy.testing._CaseError`` is private to the ``bastion policy
test`` runner, which reports it as a test ERROR; ``bastion.audit.export.SinkUnavailable`` is an
audit export destination refusing a batch, which the exporter logs and retries (never a request's
error: export runs beside the request path).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS

__all__ = [
    "ECHO_LIMIT",
    "AnswerWithheld",
    "ApprovalPending",
    "ApprovalRefused",
    "ArgumentsTooLarge",
    "AuditUnavailable",
    "AuthenticationError",
    "BastionError",
    "BatchRejected",
    "BodyTimeout",
    "BodyTooLarge",
    "CheckpointInvalid",
    "ConfigError",
    "ConfirmationRequired",
    "ConnectionExpired",
    "ContinuationsUnavailable",
    "DecisionRefused",
    "DefinitionQuarantined",
    "EgressDenied",
    "ForbiddenOrigin",
    "HeaderMismatch",
    "IdentityProviderError",
    "InsufficientScope",
    "InvalidArguments",
    "LimitsUnavailable",
    "ListenerOverflow",
    "MethodNotFound",
    "MissingCapability",
    "NotAcceptable",
    "OAuthError",
    "ParseError",
    "PolicyDenied",
    "RateLimited",
    "ResultWithheld",
    "RevocationsUnavailable",
    "RouteBlocked",
    "SessionCapReached",
    "SessionNotFound",
    "SessionRequired",
    "SessionsUnavailable",
    "ShuttingDown",
    "TokenExchangeFailed",
    "TransportError",
    "UnknownContinuation",
    "UnsupportedMediaType",
    "UnsupportedVersion",
    "UpstreamAuthorizationError",
    "UpstreamConnectionRequired",
    "UpstreamError",
    "UpstreamUnavailable",
    "VaultError",
    "clip",
    "http_status",
]

#: At most this many characters of client input are quoted in an error message.
ECHO_LIMIT = 200


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` as an error message may quote it: unchanged up to ``limit`` characters (code points),
    else its first ``limit`` characters and ``…(N more characters)``.

    For every message built from client input (a method or tool name, a header value, a URL), so a
    10,000-character name is not sent back whole. Messages an upstream wrote are relayed as it wrote them.
    """
    left_out = len(text) - limit
    if left_out <= 0:
        return text
    return f"{text[:limit]}…({left_out} more character{'' if left_out == 1 else 's'})"


class BastionError(Exception):
    """Base of every error Bastion raises on purpose.

    ``status`` is the HTTP status, ``jsonrpc_code`` the JSON-RPC ``error.code``,
    ``code`` a stable snake_case string recorded in the audit log, ``data`` the
    optional JSON-RPC ``error.data`` (must be safe to show the client).
    """

    status: ClassVar[int] = 500
    jsonrpc_code: int = -32603
    code: ClassVar[str] = "internal_error"

    as_tool_result: bool = False
    """Answer a ``tools/call`` with a tool execution error (``isError: true``, the message as text,
    ``data`` as ``structuredContent``) instead of a JSON-RPC error; set by the stage that raises."""

    result: dict[str, Any] | None = None
    """A JSON-RPC ``result`` to answer the request with instead of an error (e.g. an MCP 2026-07-28
    ``InputRequiredResult``); the request is still refused and recorded as this error."""

    def __init__(self, message: str, *, data: Any = None, jsonrpc_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if jsonrpc_code is not None:
            self.jsonrpc_code = jsonrpc_code


class ConfigError(BastionError):
    """The configuration is invalid; ``message`` names the place (file, key)."""

    code = "config_error"


class TransportError(BastionError):
    """The HTTP request or its JSON-RPC body is malformed (MCP 2025-11-25 basic/transports)."""

    status = 400
    jsonrpc_code = -32600
    code = "invalid_request"


class ParseError(TransportError):
    """The body is not valid JSON (JSON-RPC 2.0 section 5.1, -32700)."""

    jsonrpc_code = -32700
    code = "parse_error"


class ArgumentsTooLarge(TransportError):
    """The call's ``arguments`` exceed a limit of ``server.argument_limits`` (depth, members,
    elements, string length or values in all): JSON-RPC 2.0 section 5.1 "Invalid params".

    ``sizes`` is what was measured (``bastion.transport.sizes.ArgumentSizes.as_record``),
    recorded in the audit record instead of the arguments.
    """

    jsonrpc_code = -32602
    code = "arguments_too_large"

    def __init__(self, message: str, *, sizes: dict[str, Any]) -> None:
        super().__init__(message)
        self.sizes = sizes


class InvalidArguments(TransportError):
    """A ``tools/call``'s arguments are not valid against the tool's ``inputSchema``, or the schema
    does not compile (the tool is then unusable). JSON-RPC 2.0 "Invalid params" (-32602) for
    clients before 2025-11-25; from 2025-11-25 a tool execution error the model can correct
    itself from (MCP 2025-11-25 server/tools "Error Handling", SEP-1303: ``as_tool_result``).
    Status 200: the request was well formed, its arguments were not.
    """

    status = 200
    jsonrpc_code = -32602
    code = "invalid_arguments"


class BatchRejected(TransportError):
    """A JSON-RPC batch was sent; MCP since 2025-06-18 allows one message per POST."""

    code = "batch_rejected"


class BodyTooLarge(TransportError):
    """The request body exceeds the configured limit."""

    status = 413
    code = "body_too_large"


class BodyTimeout(TransportError):
    """The request body did not arrive in full within ``server.body_timeout_s`` of its headers
    (RFC 9110 section 15.5.9, 408 Request Timeout)."""

    status = 408
    code = "body_timeout"


class HeaderMismatch(TransportError):
    """A mirrored header (``Mcp-Method``, ``Mcp-Name``, ``MCP-Protocol-Version``) differs from the body.

    MCP 2026-07-28 basic/transports, error -32020.
    """

    jsonrpc_code = -32020
    code = "header_mismatch"


class UnsupportedVersion(TransportError):
    """``MCP-Protocol-Version`` names a version Bastion does not serve (MCP 2026-07-28
    basic/transports: ``UnsupportedProtocolVersionError``, -32022, whose ``data`` is
    ``{"supported": [...], "requested": "<the header>"}``)."""

    jsonrpc_code = -32022
    code = "unsupported_protocol_version"


class MissingCapability(TransportError):
    """The request needs a client capability its ``_meta`` does not declare (MCP 2026-07-28
    basic, "Missing Required Capabilities": -32021, ``data.requiredCapabilities`` a
    ``ClientCapabilities`` object naming what is missing, e.g.
    ``{"extensions": {"io.modelcontextprotocol/tasks": {}}}``)."""

    jsonrpc_code = -32021
    code = "missing_client_capability"


class UnknownContinuation(TransportError):
    """A request continues something Bastion did not see issued to this principal on this route:
    a multi round-trip ``requestState`` (MCP 2026-07-28 SEP-2322) or a task id (the tasks
    extension, SEP-2663). JSON-RPC 2.0 "Invalid params" (-32602); nothing is forwarded."""

    jsonrpc_code = -32602
    code = "unknown_continuation"


class UnsupportedMediaType(TransportError):
    """A POST whose ``Content-Type`` is not ``application/json``."""

    status = 415
    code = "unsupported_media_type"


class NotAcceptable(TransportError):
    """The ``Accept`` header admits neither ``application/json`` nor ``text/event-stream``."""

    status = 406
    code = "not_acceptable"


class SessionRequired(TransportError):
    """A handshake-era request other than ``initialize`` without ``MCP-Session-Id``."""

    code = "session_required"


class ForbiddenOrigin(TransportError):
    """The ``Origin`` or ``Host`` header is not allowed (DNS rebinding protection)."""

    status = 403
    code = "forbidden_origin"


class AuthenticationError(BastionError):
    """The bearer token is missing or invalid (RFC 6750 section 3, RFC 9728 section 5.1).

    ``reason`` is a short machine string (``missing_token``, ``bad_signature``,
    ``wrong_audience`` ...) recorded in the audit log; the client sees only
    ``invalid_token``.
    """

    status = 401
    jsonrpc_code = -32001
    code = "unauthenticated"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class OAuthError(BastionError):
    """An authorization server request refused, in the OAuth form (RFC 6749 sections 4.1.2.1 and 5.2).

    ``error`` is the registered error code (``invalid_request``, ``invalid_client``,
    ``invalid_grant``, ``unauthorized_client``, ``unsupported_grant_type``,
    ``invalid_scope``, ``access_denied``, RFC 8707 ``invalid_target``, RFC 7591
    ``invalid_redirect_uri`` / ``invalid_client_metadata``); ``description`` is
    safe to show the client. ``http_status`` is 400, or 401 for ``invalid_client``.
    """

    status = 400
    jsonrpc_code = -32600
    code = "oauth_error"

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    @property
    def http_status(self) -> int:
        """The status of the error response (RFC 6749 section 5.2)."""
        return 401 if self.error == "invalid_client" else 400


class SessionNotFound(BastionError):
    """The ``MCP-Session-Id`` is unknown to this principal (MCP basic/transports: 404)."""

    status = 404
    jsonrpc_code = -32001
    code = "session_not_found"


class MethodNotFound(BastionError):
    """A method Bastion does not know for the request's protocol version, or one that version
    removed (MCP 2026-07-28 removed ``initialize``, ``ping``, ``logging/setLevel``,
    ``resources/subscribe``/``unsubscribe``; the tasks extension removed ``tasks/result`` and
    ``tasks/list``). JSON-RPC 2.0 section 5.1 -32601; HTTP 404 on 2026-07-28 (basic/transports),
    200 for a handshake-era client, to which a 404 would say that its session is gone."""

    status = 200
    jsonrpc_code = -32601
    code = "method_not_found"


class PolicyDenied(BastionError):
    """The policy engine denied the request; ``data`` holds only the deciding policy ids."""

    status = 200
    jsonrpc_code = -32003
    code = "policy_denied"


class InsufficientScope(PolicyDenied):
    """A policy denied the call until the token carries more scope (RFC 6750 section 3.1;
    MCP 2025-11-25 basic/authorization, "Scope Challenge Handling").

    ``scope`` is every scope the client should ask for (what it has plus what is needed),
    sent in the 403's ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``.
    """

    status = 403
    code = "insufficient_scope"

    def __init__(self, message: str, *, scope: str, data: Any = None) -> None:
        super().__init__(message, data=data)
        self.scope = scope


class ApprovalPending(PolicyDenied):
    """The call needs a person's approval that has not come yet (docs/architecture.md, "Approvals").

    Always answered as a tool execution error (``isError: true``): the text says the approval is
    pending, its id and the page where its status shows, so the model can tell the person and
    retry the same call later; ``data`` is ``{"approval": id, "status": "pending", "url": page,
    "expires_at": epoch seconds, "policies": [...]}``.
    """

    code = "approval_pending"
    as_tool_result = True


class ConfirmationRequired(PolicyDenied):
    """The call waits for its requester to confirm it on Bastion's confirm page: MCP's URL
    elicitation required error (MCP 2025-11-25 client/elicitation, "URL Elicitation Required
    Error", -32042). ``data`` is ``{"elicitations": [{"mode": "url", "elicitationId": approval id,
    "url": the confirm page, "message"}], "approval": id}``; the client opens the URL for the
    person and retries the same call once they confirmed. Never form-mode elicitation, which the
    client or the model could answer."""

    jsonrpc_code = -32042
    code = "confirmation_required"

    def __init__(self, message: str, *, url: str, approval_id: str, policies: list[str]) -> None:
        elicitation = {"mode": "url", "elicitationId": approval_id, "url": url, "message": message}
        super().__init__(message, data={"elicitations": [elicitation], "approval": approval_id, "policies": policies})


class RateLimited(PolicyDenied):
    """A rate limit or quota refuses the call (``limits:``, ``@rate``, ``@quota``): HTTP 429 with
    ``Retry-After`` (RFC 9110 section 10.2.3, whole seconds) and a JSON-RPC error (-32003) whose
    ``data`` names the limit: ``{"limit": name, "rate": "20/minute", "retry_after_s": n}``."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, limit: str, rate: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(message, data={"limit": limit, "rate": rate, "retry_after_s": self.retry_after_s})


class SessionCapReached(PolicyDenied):
    """A session cap refuses the call (``session_caps:``): a JSON-RPC error (-32003) whose ``data``
    names the cap: ``{"cap": "calls", "limit": 200, "used": 200}``. A new session starts with
    nothing used."""

    code = "session_cap"

    def __init__(self, message: str, *, cap: str, limit: int, used: int) -> None:
        super().__init__(message, data={"cap": cap, "limit": limit, "used": used})


class LimitsUnavailable(BastionError):
    """The store that counts rates and quotas could not answer (Redis down or unreachable): the
    call is refused rather than let through uncounted (fail closed)."""

    status = 503
    code = "limits_unavailable"


class ApprovalRefused(PolicyDenied):
    """The approval this call waited for was denied or expired: a JSON-RPC error (-32003) whose
    ``data`` names the approval id, its status and, for a denial, the approver's reason."""

    code = "approval_refused"


class DecisionRefused(BastionError):
    """A person may not make this approval decision (``bastion.approvals.desk``): ``status`` 404
    (no such request), 409 (not pending any more), 403 (their own review, someone else's
    confirmation, or no policy allows it); ``reason`` is the audit code (``unknown_approval``,
    ``not_pending``, ``own_request``, ``not_requester``, ``policy_denied``)."""

    status = 403
    code = "approval_decision_refused"

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]
        self.reason = reason


class RevocationsUnavailable(BastionError):
    """The shared revocation list (``stores.postgres_revocations``) has not been kept current for
    longer than it may be stale (its change feed is down): every token is refused rather than a
    revoked one let through (fail closed)."""

    status = 503
    code = "revocations_unavailable"


class SessionsUnavailable(BastionError):
    """The session store (``stores.redis``) could not open or find a session: the message is refused
    rather than handled without its session (fail closed)."""

    status = 503
    code = "sessions_unavailable"


class ContinuationsUnavailable(BastionError):
    """The continuation store (``stores.redis``) could not be asked whether a request state or task id
    was issued to the caller: the request is refused rather than forwarded unchecked (fail closed)."""

    status = 503
    code = "continuations_unavailable"


class AuditUnavailable(BastionError):
    """The audit record could not be written durably, so nothing is forwarded."""

    status = 503
    code = "audit_unavailable"


class ShuttingDown(BastionError):
    """A call still in flight when the graceful stop's ``server.drain_s`` ran out
    (``bastion.transport.drain``): cut, and answered and recorded with this error."""

    status = 503
    code = "shutting_down"


class UpstreamError(BastionError):
    """The upstream MCP server failed or answered with something unusable."""

    status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """The upstream cannot be reached or its process is not running."""

    status = 503
    code = "upstream_unavailable"


class EgressDenied(BastionError):
    """An outbound fetch was refused by the egress guard (SSRF protection).

    The destination is not a public address and not on the allow list, the URL
    is not acceptable (scheme, user info, host encoding), a redirect led to such a
    destination, or the response is larger than allowed. ``message`` names the host
    and the reason, never a credential. See the MCP security best practices, SSRF.
    """

    status = 403
    jsonrpc_code = -32003
    code = "egress_denied"


class DefinitionQuarantined(BastionError):
    """A call names a tool, prompt or resource whose definition is held for an administrator: new
    or changed since it was pinned (issue 15, "Pinning and quarantine"), or hidden by a scanner
    finding. Nothing is forwarded. ``data`` names the route, the kind and name, the reason
    (``new``, ``drift``, ``finding``, ``unlisted``), the definition's SHA-256 and the commands an
    administrator runs (``bastion tools diff --route R``, ``bastion tools approve ...``)."""

    status = 200
    jsonrpc_code = -32003
    code = "definition_quarantined"


class RouteBlocked(DefinitionQuarantined):
    """A definition on the route has a scanner finding whose action is ``block``: the route refuses
    every request until an administrator approves. ``data`` names the route, the definitions that
    block it and the commands to run."""

    code = "route_blocked"


class UpstreamConnectionRequired(BastionError):
    """The caller has not connected this route's upstream (or must connect it again): MCP's URL
    elicitation required error (MCP 2025-11-25 client/elicitation, "URL Elicitation Required
    Error", code -32042). ``data`` is ``{"elicitations": [{"mode": "url", "elicitationId",
    "url", "message"}]}``: the portal page where the person connects it."""

    status = 200
    jsonrpc_code = -32042
    code = "upstream_not_connected"

    def __init__(self, message: str, *, url: str, elicitation_id: str) -> None:
        super().__init__(
            message,
            data={"elicitations": [{"mode": "url", "elicitationId": elicitation_id, "url": url, "message": message}]},
        )
        self.url = url


class AnswerWithheld(BastionError):
    """Inspection withheld the upstream's answer to the client's own request: a message filter
    dropped it, or the upstream's reply answers another request (docs/architecture.md, "Message
    filters"). The dropped message has a decision record of its own (``filtered:<filter>`` or
    ``unsolicited_response``); the client gets this JSON-RPC error for its request instead. A
    filter that raises is a bug, recorded as ``internal_error``, not this."""

    status = 500
    code = "answer_withheld"


class ResultWithheld(AnswerWithheld):
    """A tool result far above its tool's usual volume, withheld on a route whose
    ``result_volume`` is ``withhold`` (``bastion.pipeline.stages.volume``): the client gets a tool
    execution error (``isError: true``, MCP 2025-11-25 server/tools "Error Handling") saying why,
    whose ``structuredContent.error`` carries ``data`` (the measure, its value, the usual value)."""

    status = 200
    code = "result_withheld"
    as_tool_result = True


class IdentityProviderError(BastionError):
    """Signing a person in through an OpenID Connect provider failed (discovery, the token
    response, the ID token's checks of OpenID Connect Core 1.0 section 3.1.3.7, UserInfo);
    ``message`` is safe to show the person on the sign-in page."""

    status = 502
    code = "identity_provider_error"


class CheckpointInvalid(BastionError):
    """A line of the audit checkpoints file that does not parse, names an unknown key, or whose
    signature fails (``bastion.audit.checkpoints``): ``bastion audit verify`` stops on it. Never an
    answer to a client."""

    status = 500
    code = "checkpoint_invalid"


class VaultError(BastionError):
    """A sealed token vault record cannot be opened: unknown key id, or its tag does not verify
    (tampered, moved to another owner or route, or sealed with a key no longer configured).
    The credential broker treats the record as absent (the person connects again)."""

    status = 500
    code = "vault_error"


class UpstreamAuthorizationError(BastionError):
    """Bastion, as OAuth client of an upstream's authorization server on a person's behalf
    (MCP 2025-11-25 basic/authorization), failed: discovery, registration, the code or refresh
    grant; ``message`` names the route and is safe to show the person."""

    status = 502
    code = "upstream_authorization_error"


class ConnectionExpired(UpstreamAuthorizationError):
    """The authorization server refused the refresh token (``invalid_grant``, RFC 6749 section
    5.2) or there is none: the person must connect again. The credential broker turns it into
    ``UpstreamConnectionRequired``."""

    code = "upstream_connection_expired"


class TokenExchangeFailed(UpstreamError):
    """The STS refused the exchange or answered with something Bastion cannot present (RFC 8693).

    HTTP 502, JSON-RPC ``-32603`` (internal error), audit code ``token_exchange_failed``.
    ``error`` is the RFC 6749 section 5.2 / RFC 8693 section 2.2.2 error code when the STS
    sent one (``invalid_request``, ``invalid_client``, ``invalid_target`` ...), else None;
    ``sts_status`` the STS's HTTP status, or None when the answer was not the problem.
    ``message`` names the route and the STS host, never a token or a secret.
    """

    status = 502
    code = "token_exchange_failed"

    def __init__(self, message: str, *, error: str | None = None, sts_status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.sts_status = sts_status


class ListenerOverflow(UpstreamError):
    """A listener of a stdio server's broadcast notifications fell more than
    ``bastion.upstream.stdio.SUBSCRIPTION_DEPTH`` of them behind: its stream ends with this error
    (and an error outcome) instead of skipping notifications silently, and the client reconnects."""

    code = "listener_overflow"


def http_status(error: BastionError, era: str) -> int:
    """The HTTP status that answers ``error`` for a request of protocol ``era`` (``"handshake"`` or
    ``"modern"``): on 2026-07-28 the one basic/transports gives its JSON-RPC code (400 for -32600,
    -32602, -32020, -32021, -32022; 404 for -32601), else ``error.status``."""
    if era == "modern":
        return ERROR_CODE_HTTP_STATUS.get(error.jsonrpc_code, error.status)
    return error.status
