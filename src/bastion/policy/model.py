"""The Cedar entity model of Bastion and the policy decision (docs/architecture.md, "Policy model").

Principals are ``User::"<sub>"`` (attributes ``email``, ``name``, ``idp``, ``issuer``,
``auth``) and ``ServiceAccount::"<sub>"`` (``name``, ``idp``, ``issuer``, ``auth``), each
``in Group::"<name>"`` for every group. ``idp`` is who vouched for the subject
(``Principal.idp``: an identity provider's configured name, ``"local"`` for the users file,
``"bastion"`` for ``bastion token mint``, an external issuer's name or URL); ``issuer`` is
the token's ``iss``. Resources are ``Tool::"<route>/<tool>"``, ``Resource::"<route>/<uri>"`` and
``Prompt::"<route>/<name>"``, each ``in Server::"<route>"``; server-to-client requests
(sampling, elicitation, roots) use ``Server::"<route>"`` itself. Entity ids are passed in Cedar's
structured ``{"type", "id"}`` form, never as Cedar text, so any character is safe.

A tool's ``risk`` is the one its route's configuration gives it (``routes[].tools``, see
``bastion.policy.inventory``); without one, the MCP tool annotations decide only on a route
that trusts them (``trust_annotations``), and the tool is otherwise ``"destructive"``
(fail closed: annotations are hints from a server Bastion does not trust). From trusted
annotations (MCP 2025-11-25 server/tools, ToolAnnotations), over-classifying when in doubt:
``destructiveHint: true`` -> ``"destructive"`` (even with ``readOnlyHint: true``);
else ``readOnlyHint: true`` -> ``"read"``; else ``destructiveHint: false`` -> ``"write"``;
else (absent, as MCP's default for a non-read-only tool is destructive) ``"destructive"``.
A hint that is not a JSON boolean counts as absent and is left out of ``annotations``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.principal import Principal

__all__ = [
    "ACTIONS",
    "ADMIN_ACTIONS",
    "DEFAULT_DENY",
    "POLICY_ACTIONS",
    "Decision",
    "ResourceRef",
    "Risk",
    "RiskSource",
    "principal_entity",
    "tool_risk",
]

ACTIONS = frozenset(
    {"tools/call", "resources/read", "prompts/get", "sampling/createMessage", "elicitation/create", "roots/list"}
)
"""The MCP methods that reach an upstream, one Cedar ``Action`` each."""

ADMIN_ACTIONS = frozenset({"approvals/decide", "audit/search", "definitions/approve"})
"""Bastion's own actions, decided on its own entities (``Approval``, ``AuditLog``) or on a route
(``Server``: approving its definitions), never on an MCP request."""

POLICY_ACTIONS = ACTIONS | ADMIN_ACTIONS
"""Every action a policy may name."""

DEFAULT_DENY = "default-deny"
"""``Decision.reason`` of a deny that no policy decided (``policy_ids`` is empty)."""

ResourceKind = Literal["Tool", "Resource", "Prompt", "Server"]
Risk = Literal["read", "write", "destructive"]
RiskSource = Literal["config", "annotations", "default"]

_RISKS = frozenset({"read", "write", "destructive"})
_BOOL_HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
_KINDS = frozenset({"Tool", "Resource", "Prompt", "Server"})


def tool_risk(annotations: Mapping[str, Any]) -> Risk:
    """Classify a tool as ``read``, ``write`` or ``destructive`` (rule in the module docstring)."""
    if annotations.get("destructiveHint") is True:
        return "destructive"
    if annotations.get("readOnlyHint") is True:
        return "read"
    if annotations.get("destructiveHint") is False:
        return "write"
    return "destructive"


def _clean_annotations(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The ``annotations`` record: the boolean hints and a string ``title`` where present."""
    clean: dict[str, Any] = {k: annotations[k] for k in _BOOL_HINTS if isinstance(annotations.get(k), bool)}
    if isinstance(annotations.get("title"), str):
        clean["title"] = annotations["title"]
    return clean


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """What a request acts on: kind ``Tool``/``Resource``/``Prompt`` (or ``Server``).

    ``route`` is the Bastion route (``Server::"<route>"``), ``name`` the tool name,
    resource URI or prompt name (ignored for ``Server``). Of ``attrs``, the entity gets
    ``owner`` and ``classification`` (strings, default ""), and for tools ``risk`` (default
    ``"destructive"``), ``annotations`` and ``labels`` (strings, a Cedar set); other keys
    (such as a tool's ``risk_source``) stay on the ref for the caller but are not given to
    Cedar (the schema declares exactly these). Raises ``ValueError`` for another kind or a
    risk other than read/write/destructive.
    """

    kind: ResourceKind
    route: str
    name: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    _json: list[str] = field(default_factory=list, compare=False, repr=False)  # cache cell: (entity, uid)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown resource kind {self.kind!r}")
        if self.kind == "Tool" and self.attrs.get("risk", "destructive") not in _RISKS:
            raise ValueError(f"tool risk must be one of {sorted(_RISKS)}, not {self.attrs['risk']!r}")

    @classmethod
    def from_tool(
        cls,
        route: str,
        tool: Mapping[str, Any],
        *,
        trust_annotations: bool = False,
        risk: Risk | None = None,
        owner: str = "",
        classification: str = "",
        labels: Iterable[str] = (),
    ) -> ResourceRef:
        """Build a Tool ref from an MCP ``Tool`` definition (``name``, ``annotations``).

        The risk is ``risk`` when given (configured); else, with ``trust_annotations``, derived
        from the annotations with ``tool_risk``; else ``"destructive"``. ``attrs["risk_source"]``
        says which (``config``, ``annotations`` or ``default``). Request handling builds refs
        through the route's ``ToolInventory``, never directly. Raises ``ValueError`` when
        ``name`` is not a non-empty string or ``risk`` is not read/write/destructive.
        """
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("an MCP tool definition needs a non-empty string 'name'")
        raw = tool.get("annotations")
        annotations = raw if isinstance(raw, Mapping) else {}
        source: RiskSource
        if risk is not None:
            source = "config"
        elif trust_annotations:
            risk, source = tool_risk(annotations), "annotations"
        else:
            risk, source = "destructive", "default"
        attrs = {
            "risk": risk,
            "risk_source": source,
            "annotations": _clean_annotations(annotations),
            "owner": owner,
            "classification": classification,
            "labels": tuple(sorted(set(labels))),
        }
        return cls("Tool", route, name, attrs)

    @classmethod
    def server(cls, route: str) -> ResourceRef:
        """The route itself, ``Server::"<route>"``: the resource of sampling and elicitation."""
        return cls("Server", route)

    @property
    def uid(self) -> dict[str, str]:
        """The Cedar entity uid in structured form."""
        entity_id = self.route if self.kind == "Server" else f"{self.route}/{self.name}"
        return {"type": self.kind, "id": entity_id}

    def entity_json(self) -> tuple[str, str]:
        """``(entity, uid)`` as JSON text, computed once per ref (refs are immutable).

        Raises like ``entity``.
        """
        if not self._json:
            self._json.extend((json.dumps(self.entity()), json.dumps(self.uid)))
        return self._json[0], self._json[1]

    def entity(self) -> dict[str, Any]:
        """The Cedar entity (JSON form) with its ``Server`` parent and attributes.

        Raises ``TypeError`` when ``owner`` or ``classification`` is not a string, or a tool's
        ``labels`` not a collection of strings.
        """
        if self.kind == "Server":
            return {"uid": self.uid, "attrs": {"route": self.route}, "parents": []}
        attrs: dict[str, Any] = {"name": self.name, "route": self.route}
        for key in ("owner", "classification"):
            value = self.attrs.get(key, "")
            if not isinstance(value, str):
                raise TypeError(f"{self.kind} attribute {key!r} must be a string")
            attrs[key] = value
        if self.kind == "Tool":
            attrs["risk"] = self.attrs.get("risk", "destructive")
            raw = self.attrs.get("annotations")
            attrs["annotations"] = _clean_annotations(raw if isinstance(raw, Mapping) else {})
            labels = self.attrs.get("labels", ())
            if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
                raise TypeError("Tool attribute 'labels' must be a collection of strings")
            attrs["labels"] = sorted(set(labels))
        return {"uid": self.uid, "attrs": attrs, "parents": [{"type": "Server", "id": self.route}]}


def principal_entity(principal: Principal) -> dict[str, Any]:
    """The Cedar entity (JSON form) of a principal, with one ``Group`` parent per group.

    Attributes: ``idp`` (``Principal.idp``), ``issuer`` (the token's ``iss``), ``auth``
    (``Principal.auth_method``), and ``name`` / ``email`` (users only) when known.
    """
    attrs: dict[str, Any] = {"idp": principal.idp, "issuer": principal.issuer, "auth": principal.auth_method}
    if principal.name is not None:
        attrs["name"] = principal.name
    if principal.kind == "User" and principal.email is not None:
        attrs["email"] = principal.email
    return {
        "uid": {"type": principal.kind, "id": principal.sub},
        "attrs": attrs,
        "parents": [{"type": "Group", "id": group} for group in principal.groups],
    }


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one authorization: Cedar's answer, in Bastion's terms.

    ``effect`` is ``"allow"`` or ``"deny"``. ``policy_ids`` are the ``@id`` annotations of
    the determining policies: the permits that allowed, the forbids that denied, or the
    policies whose evaluation failed; empty for a default deny. ``obligations`` are the
    other annotations of the determining policies (``@approval("review")`` ->
    ``{"approval": "review"}``). ``errors`` holds evaluation or engine errors; any error
    makes the decision a deny (Bastion fails closed).
    """

    effect: Literal["allow", "deny"]
    policy_ids: tuple[str, ...] = ()
    obligations: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """True only for an allow."""
        return self.effect == "allow"

    @property
    def reason(self) -> Literal["permit", "forbid", "default-deny", "error"]:
        """Why: ``permit``, ``forbid``, ``error`` or ``default-deny`` (no policy applied)."""
        if self.effect == "allow":
            return "permit"
        if self.errors:
            return "error"
        return "forbid" if self.policy_ids else "default-deny"

    @classmethod
    def failed(cls, error: str, policy_ids: tuple[str, ...] = ()) -> Decision:
        """A deny because something went wrong (fail closed)."""
        return cls("deny", policy_ids, {}, (error,))
