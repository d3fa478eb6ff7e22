"""The one declaration of the request path: which stages run, in which order, for each request.

As mitmproxy's ``default_addons()`` is the one list of its addons, this module
is the one place that orders Bastion's stages (docs/architecture.md, "The request
path"). ``POST_SLOTS`` names every slot of a POST, the ones whose features are
still to come included; a slot with no component is skipped. GET (open the
session's event stream) and DELETE (end the session) have their own short lists
and go through the same runner, so they pass the same origin, authentication,
session and audit stages, and their messages the same filters.

    POST:   transport → authenticate → session → classify → continuation → definitions → validate
            → authorize → url_arguments → limits → approve → audit → forward → inspect → outcome
    GET:    transport → authenticate → session → definitions → authorize → audit → forward → inspect
            → outcome
    DELETE: transport → authenticate → session → definitions → authorize → audit → forward → outcome

``audit`` (the decision record, committed before anything is forwarded),
``forward``, ``inspect`` (the message filters) and ``outcome`` (the record after)
are the runner's own steps; the slots before them are the checks. ``inspect`` runs
the message filters in the order of ``FILTER_SLOTS``:

    list → list_changed → server_requests → continuation → volume → scan → redact

``volume`` measures a tool result as the upstream sent it, before ``scan`` (definitions held
by pins or scanner findings) and ``redact`` (secrets and personal data in results) change it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bastion.pipeline.filters import MessageFilter, MessageInspector
from bastion.pipeline.observer import NO_OBSERVER, StepObserver
from bastion.pipeline.runner import AfterHook, Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.base import Stage

__all__ = ["CHECK_SLOTS", "FILTER_SLOTS", "POST_SLOTS", "STREAM_SLOTS", "RoutePipelines", "assemble"]

POST_SLOTS = (
    "transport",  # Origin/Host, media types, one JSON-RPC message, protocol version, mirrored headers
    "authenticate",  # bearer token → Principal (RFC 9068, RFC 8707 audience)
    "session",  # MCP session bound to its principal
    "classify",  # Cedar action and resource; the tool's catalog entry
    "continuation",  # a requestState or task id only from the principal it was issued to
    "definitions",  # no call on a quarantined or hidden definition; nothing on a blocked route
    "validate",  # arguments against the tool's own inputSchema (jsonschema-rs)
    "authorize",  # the Cedar decision
    "url_arguments",  # URL-valued arguments through the egress guard
    "limits",  # rate limits, quotas, session caps; the call's data-flow labels marked
    "approve",  # human approval bound to the exact call
    "audit",  # the decision record, durable before anything is forwarded
    "forward",  # credentials (step 10) and the upstream
    "inspect",  # the message filters, on every message of the reply
    "outcome",  # the outcome record, once the reply has been sent
)
"""Every slot of a POST, in order."""

CHECK_SLOTS = POST_SLOTS[: POST_SLOTS.index("audit")]
"""The slots that decide, before the runner's own steps."""

STREAM_SLOTS = ("transport", "authenticate", "session", "definitions", "authorize")
"""The checks of a GET (event stream) and a DELETE (end of session)."""

FILTER_SLOTS = (
    "list",  # list results filtered by the policy for calls
    "list_changed",  # the catalog marked stale on notifications/tools/list_changed
    "server_requests",  # sampling, elicitation, roots decided like calls
    "continuation",  # the requestState and task ids issued to the caller, recorded
    "volume",  # tool results far above their tool's usual volume flagged or withheld
    "scan",  # definitions quarantined (pins) or hidden by scanner findings taken out of lists
    "redact",  # secrets and personal data redacted in results; injected instructions flagged
)
"""The message filters, in the order they see each upstream-to-client message."""


@dataclass(frozen=True, slots=True)
class RoutePipelines:
    """One route's runners: ``post`` for JSON-RPC messages, ``get`` for the event stream,
    ``delete`` for the end of a session."""

    post: Pipeline
    get: Pipeline
    delete: Pipeline

    def for_method(self, method: str) -> Pipeline | None:
        """The runner of an HTTP method, or ``None`` (405)."""
        return {"POST": self.post, "GET": self.get, "DELETE": self.delete}.get(method)


def _ordered(slots: Sequence[str], components: Mapping[str, object]) -> list[object]:
    unknown = set(components) - set(slots)
    if unknown:
        raise ValueError(f"no slot named {', '.join(sorted(unknown))}; slots: {', '.join(slots)}")
    return [components[slot] for slot in slots if slot in components]


def assemble(
    *,
    checks: Mapping[str, Stage],
    stream_checks: Mapping[str, Stage],
    forward: Mapping[str, Stage],
    filters: Mapping[str, MessageFilter],
    audit: AuditStage,
    observer: StepObserver = NO_OBSERVER,
    after: Sequence[AfterHook] = (),
) -> RoutePipelines:
    """Build a route's runners from its components, placed by slot name.

    ``checks`` fills ``CHECK_SLOTS``, ``stream_checks`` ``STREAM_SLOTS``, ``filters``
    ``FILTER_SLOTS``; ``forward`` maps ``POST``, ``GET`` and ``DELETE`` to their
    forward stage; ``after`` runs once a POST's reply was sent (``Pipeline``). Raises
    ``ValueError`` for a component in a slot that does not exist.
    """
    ordered_filters: list[MessageFilter] = _ordered(FILTER_SLOTS, filters)  # type: ignore[assignment]
    inspector = MessageInspector(ordered_filters, on_drop=audit.record_dropped)
    post_checks: list[Stage] = _ordered(CHECK_SLOTS, checks)  # type: ignore[assignment]
    stream: list[Stage] = _ordered(STREAM_SLOTS, stream_checks)  # type: ignore[assignment]

    def pipeline(stages: list[Stage], method: str, kind: str) -> Pipeline:
        return Pipeline(
            stages, audit=audit, forward=forward[method], inspector=inspector,
            stream="stream" if kind == "stream" else "reply", observer=observer,
            after=after if method == "POST" else (),
        )  # fmt: skip

    return RoutePipelines(
        post=pipeline(post_checks, "POST", "reply"),
        get=pipeline(stream, "GET", "stream"),
        delete=pipeline(stream, "DELETE", "reply"),
    )
