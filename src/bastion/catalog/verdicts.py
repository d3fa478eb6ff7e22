"""The judgement of one definition, without I/O: the plan against its pin, the verdict, the errors.

Sans-IO half of ``bastion.catalog.guard`` (issue 15, "Pinning and quarantine"): ``plan`` compares
a definition and its scanner findings with the route's pin and settings; ``hold_reason`` says why
it is kept for review; ``verdict_of`` whether it is served; ``refusal`` and ``blocked_error``
build the errors a refused call gets (naming the definition, why, and the commands an
administrator runs); ``definition_record`` the body of a ``definition/<step>`` audit record.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.audit.build import decision_body
from bastion.audit.canonical import NotCanonicalizable, canonical
from bastion.catalog.pins import HoldReason, Pin
from bastion.config.definitions import DefinitionSettings, FindingAction
from bastion.errors import DefinitionQuarantined, RouteBlocked, clip
from bastion.ids import new_id
from bastion.principal import Principal
from bastion.scan.findings import DefinitionKind, Finding

__all__ = [
    "KIND_LABELS",
    "SCANNER_ERROR",
    "Plan",
    "Scanner",
    "Verdict",
    "blocked_error",
    "canonical_text",
    "definition_record",
    "hold_reason",
    "person_label",
    "plan_for",
    "refusal",
    "verdict_of",
]


class Scanner(Protocol):
    """The definition scanner (``bastion.scan.definitions.scan_definition``)."""

    def __call__(
        self, kind: DefinitionKind, definition: Mapping[str, Any], *, others: Collection[str] = ()
    ) -> Sequence[Finding]:
        """The findings on ``definition``; ``others``: the names of the other tools Bastion knows (this
        route's and every other route's), for the shadowing rule."""
        ...


KIND_LABELS: dict[DefinitionKind, str] = {
    "tool": "tool", "prompt": "prompt", "resource": "resource", "resource_template": "resource template"
}  # fmt: skip

SCANNER_ERROR = Finding("scanner-error", "high", "the definition scanner failed on this definition")
"""The finding of a scanner that raised: the definition is held as for any high finding (fail closed)."""


def person_label(principal: Principal | None) -> str:
    """How records and pins name a person: their email, else their name, else their subject."""
    if principal is None:
        return ""
    return principal.email or principal.name or principal.sub


def canonical_text(definition: Mapping[str, Any]) -> str:
    """The definition's canonical JSON (RFC 8785) as text, as pins and held definitions keep it."""
    try:
        return canonical(dict(definition)).decode()
    except NotCanonicalizable:
        return repr(definition)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a definition of hash ``sha256`` is served. ``served``; ``reason``: served as
    ``reviewed`` (a person approved exactly it), ``pinned``, ``unpinned`` (the route's pins have not
    started) or ``unguarded`` (its kind is not pinned); refused as ``new``, ``drift``, ``finding``
    (hidden by a finding), ``blocked`` (its finding blocks the route) or ``unlisted`` (a call on a
    tool the upstream does not list). ``findings``: the scanner's."""

    served: bool
    reason: str
    sha256: str
    findings: tuple[Finding, ...] = ()


@dataclass(slots=True)
class Plan:
    """One judgement being made: the definition, its findings and their worst ``action``, how it
    stands against its pin (``reason``: ``reviewed``, ``pinned``, ``unpinned``, ``unguarded``, ``new``
    or ``drift``), the pin, and whether it is to be pinned at first sight (``auto_pin``)."""

    kind: DefinitionKind
    name: str
    definition: Mapping[str, Any]
    sha256: str
    findings: tuple[Finding, ...]
    action: FindingAction | None
    reason: str = "pinned"
    pinned: Pin | None = None
    auto_pin: bool = False


def plan_for(
    kind: DefinitionKind,
    name: str,
    definition: Mapping[str, Any],
    sha256: str,
    findings: tuple[Finding, ...],
    *,
    settings: DefinitionSettings,
    pin: Pin | None,
    started: bool,
) -> Plan:
    """Steps 2 and 3 of ``bastion.catalog.guard``: the definition against ``pin`` under ``settings``
    (``started``: the kind's pins have started on the route, a baseline or ``pin: strict``)."""
    made = Plan(kind, name, definition, sha256, findings, settings.on_finding.worst([f.severity for f in findings]))
    made.pinned = pin
    if pin is not None and pin.sha256 == sha256 and pin.reviewed:
        made.reason = "reviewed"
    elif not settings.pins(kind):
        made.reason = "unguarded"
    elif pin is None:
        if started:
            made.reason = "new"
        elif settings.pin == "first_use":
            made.auto_pin = True
        else:
            made.reason = "unpinned"
    elif pin.sha256 != sha256:
        made.reason = "drift"
    return made


def hold_reason(made: Plan) -> HoldReason | None:
    """Why the planned definition is kept for review (``None``: it is not)."""
    if made.reason == "new":
        return "new"
    if made.reason == "drift":
        return "drift"
    if made.action in ("hide", "block") and made.reason != "reviewed":
        return "finding"
    return "unpinned" if made.reason == "unpinned" else None


def verdict_of(made: Plan) -> Verdict:
    """Step 4 of ``bastion.catalog.guard``: whether the planned definition is served."""
    accepted = made.reason == "reviewed"
    if made.action == "block" and not accepted:
        return Verdict(False, "blocked", made.sha256, made.findings)
    if made.reason in ("new", "drift"):
        return Verdict(False, made.reason, made.sha256, made.findings)
    if made.action == "hide" and not accepted:
        return Verdict(False, "finding", made.sha256, made.findings)
    return Verdict(True, made.reason, made.sha256, made.findings)


def refusal(route: str, kind: DefinitionKind, name: str, verdict: Verdict) -> DefinitionQuarantined:
    """The error that refuses a call on a held definition: what, why, and what an administrator runs."""
    shown = clip(name, 128)
    rules = sorted({f.rule for f in verdict.findings})
    why = {
        "new": "is new: it was not there when the route's definitions were approved",
        "drift": "changed since it was approved",
        "finding": f"has a finding of the definition scanner ({', '.join(rules)})",
        "unlisted": "is not listed by the upstream, so it cannot be compared with its pin",
        "blocked": "has a finding that blocks the route",
    }.get(verdict.reason, "is held for review")
    review = f"bastion tools diff --route {route}"
    approve = f"bastion tools approve --route {route} --{'tool' if kind == 'tool' else 'name'} {shown}"
    message = (
        f"{KIND_LABELS[kind].capitalize()} {shown!r} on route {route!r} is quarantined: its definition "
        f"{why}. An administrator reviews it with `{review}` and accepts it with `{approve}`."
    )
    data: dict[str, Any] = {"route": route, "kind": kind, "name": shown, "reason": verdict.reason,
                            "sha256": verdict.sha256 or None, "review": review, "approve": approve}  # fmt: skip
    if rules:
        data["rules"] = rules
    return DefinitionQuarantined(message, data=data)


def blocked_error(route: str, blocking: Collection[tuple[DefinitionKind, str]]) -> RouteBlocked:
    """The error every request on ``route`` gets while the definitions ``blocking`` block it."""
    review = f"bastion tools diff --route {route}"
    approve = f"bastion tools approve --route {route}"
    message = (
        f"Route {route!r} is blocked: a definition it declares has a finding that blocks the route. "
        f"An administrator reviews it with `{review}` and accepts it with `{approve}`."
    )
    blocked_by = [{"kind": kind, "name": clip(name, 128)} for kind, name in sorted(blocking)]
    return RouteBlocked(message, data={"route": route, "blocked_by": blocked_by, "review": review,
                                       "approve": approve})  # fmt: skip


def definition_record(
    route: str,
    step: str,
    kind: DefinitionKind | None,
    name: str | None,
    principal: Principal | None,
    *,
    effect: str,
    reason: str | None,
    detail: Mapping[str, Any],
    policy_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The audit record (a decision record, method ``definition/<step>``, target the name) of one step:
    the definition's kind and name in its arguments, beside ``detail``; ``principal`` is whose listing
    or call revealed it (the approver for ``approved``)."""
    arguments = {"kind": kind, "name": name, **detail} if kind is not None else dict(detail)
    return decision_body(
        route=route, method=f"definition/{step}", effect=effect, policy_ids=policy_ids, obligations={},
        reason=reason, policy_version=None, arguments=arguments, principal=principal, target=name, session=None,
        decision_id=new_id(),
    )  # fmt: skip
