"""The policy engine: a Cedar decision for (principal, action, resource, context).

Policies are read, parsed and validated once, at start
(``bastion.policy.loader``). How tool arguments validate: the schema types
``context.arguments`` as the common type ``Arguments``, which the loader declares per
policy from that policy's own use of its arguments, every attribute optional (so each
access must be guarded by ``has``) and typed by the operation applied to it
(``bastion.policy.argument_types``); everything else is validated strictly. Cedar 4 has
no open records, and typing the arguments as an empty record would validate but stop
Cedar from type-checking anything after a ``has`` guard.

At run time the engine evaluates WITHOUT the schema: given one, Cedar checks the request
context against the action's context type, and the closed ``Arguments`` record rejects
the attributes of real calls. The entities and context are instead built here from fixed
shapes (tests check them against the schema), and only the MCP actions exist (the loader
refuses action groups). Arguments are converted by ``bastion.policy.convert``. Each request
is evaluated against its slice: the policies whose scope can match it
(``bastion.policy.slicing``; the same answer as the whole set, property-tested), which
``decide`` narrows further by partial evaluation with the context unknown. Cached: the
parsed slices, each principal's entity JSON, parsed entity sets (LRU, by their JSON text) and
``decide``'s decisions (by Cedar's exact inputs); context attributes that no policy reads are
not sent to Cedar.

Listings (``filter_listable``): an item is listed when SOME arguments exist for which the
call would be permitted, found by Cedar partial evaluation with ``context.arguments``
unknown (all else known). Allow -> listed; Deny -> hidden; no decision -> listed when a
permit may be determining and no forbid must be, i.e. a forbid that applies whatever the
arguments hides the item. Hidden as well on any error, on any entity Cedar treats as
unknown (partial evaluation takes an entity missing from the store as unknown where a full
one fails on its attributes; the action entity is added, without parents, as a full
evaluation assumes), and when the surely-satisfied permits' obligations conflict. It
over-approximates (residuals are not solved: ``has x && !(has x)`` lists, and an error
behind an unknown is not seen) but never decides a call: ``decide`` sees the real
arguments. Partial evaluation is an experimental Cedar feature, and cedarpy takes its
request uids only as Cedar text in normalized form, so that text is printed by Cedar
itself (``_uid_text``) from the structured uid, never escaped here.

Fail closed: no determining policy is a deny (``DEFAULT_DENY``); a forbid beats a permit
(Cedar); any evaluation error, even in a policy that did not decide, and any exception
(bad context, cedarpy failure) is a deny carrying the error. Obligations are the union of
the non-``@id`` annotations of the determining policies; two of them giving one key
different values makes the decision a deny with an error (no guessing which one holds), except
``@redact``, whose classes are united (a permit can only add redaction).

Context keys accepted (others are an error): ``arguments`` (JSON object, default ``{}``),
``client_id``, ``session`` (strings), ``ip`` (an IP address; made a Cedar ``ipaddr``),
``time`` (epoch seconds; default now), ``approved`` (bool, default false),
``session_labels`` (strings: the labels of the tools the caller touched, default none),
``records`` (a whole number >= 0: the records a call asks for, default 0) and ``bulk`` (bool,
default false: more records than the tool's ``max_records``). A missing, ``None`` or empty
``client_id``/``session``/``ip`` is left out, so policies test ``has``.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cedarpy

from bastion.approvals.model import ApprovalRequest
from bastion.policy.convert import ArgumentPaths, to_cedar_arguments
from bastion.policy.loader import LoadedPolicies, PolicyInfo, load_policies
from bastion.policy.model import ACTIONS, Decision, ResourceRef, principal_entity
from bastion.policy.slicing import PolicySlicer, Scope
from bastion.principal import Principal
from bastion.scan.redact_classes import merge_redact

__all__ = ["PolicyEngine", "admin_context", "build_context"]

_CONTEXT_KEYS = frozenset(
    {"arguments", "scopes", "client_id", "session", "time", "ip", "approved", "session_labels", "records", "bulk"}
)
_LONG_MAX = 2**63 - 1
_CEDAR_ID = re.compile(r"`(policy\d+)`")
_ARGUMENT_ACTIONS = frozenset({"tools/call"})
"""The actions whose requests carry arguments (the authorize stage passes none to others)."""
_UNKNOWN_ARGUMENTS = {"__extn": {"fn": "unknown", "arg": "arguments"}}
_EST_PREFIX = "permit(principal == "
_EST_SUFFIX = ", action, resource);"
DECISION_CACHE_SIZE = 4096
"""Decisions ``PolicyEngine.decide`` keeps per engine."""
DECISION_CACHE_KEY_CHARS = 2048
"""The longest context JSON (characters) whose decision is kept."""
_FALSE = [{"kind": "when", "body": {"Value": False}}]
"""The conditions of a residual policy that cannot be satisfied (Cedar's JSON policy format)."""
_READS_KEPT = 4096
"""Slices whose resource reads ``PolicyEngine._resource_key`` keeps (then starts afresh)."""
_NO_POLICY = Decision("deny")
"""The decision when no policy's scope matches a request: Cedar's default deny, no errors."""


class PolicyEngine:
    """Decides requests against a loaded, validated Cedar policy set (the authorize stage of
    docs/architecture.md, "The request path").

    Build it with ``PolicyEngine.load``. ``decide``, ``filter_allowed`` and
    ``filter_listable`` never raise: every failure is a deny (see the module docstring).
    ``may_permit`` (inventories only) never raises either: a failure there answers true.
    """

    __slots__ = ("_admin", "_argument_readers", "_by_cedar_id", "_decisions", "_loaded", "_narrowed_masks",
                 "_obligations_by_id", "_resource_reads", "_slicer", "limited_policy_ids")  # fmt: skip

    def __init__(self, loaded: LoadedPolicies) -> None:
        self._loaded = loaded
        self._slicer = PolicySlicer(loaded.templates)
        self._admin = PolicySlicer({k: t for k, t in loaded.templates.items() if k in loaded.admin_ids})
        self._argument_readers = self._slicer.mask_of(loaded.argument_readers)
        self._decisions: OrderedDict[tuple[str, str, str, str], Decision] = OrderedDict()
        self._narrowed_masks: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._resource_reads: dict[int, frozenset[str] | None] = {}
        self._by_cedar_id: Mapping[str, PolicyInfo] = loaded.by_cedar_id
        self._obligations_by_id = {info.policy_id: info.obligations for info in loaded.by_cedar_id.values()}
        self.limited_policy_ids: frozenset[str] = frozenset(
            info.policy_id for info in loaded.by_cedar_id.values() if {"rate", "quota"} & set(info.obligations)
        )
        """The policies carrying ``@rate`` or ``@quota`` (the limits stage looks at no others)."""

    @classmethod
    def load(cls, policy_paths: Sequence[Path], schema_path: Path | None = None) -> PolicyEngine:
        """Load and validate ``.cedar`` files (directories: every ``*.cedar`` in them).

        ``schema_path`` is a Cedar schema in Cedar syntax that leaves ``Arguments``
        undeclared; None means the built-in schema. Raises ``ConfigError`` naming the file
        with Cedar's error text (see ``bastion.policy.loader.load_policies``).
        """
        return cls(load_policies(policy_paths, schema_path))

    def adopt(self, other: PolicyEngine) -> None:
        """Take ``other``'s policy set, in place (a hot reload, ``bastion.policy.reloading``): every
        holder of this engine decides with the new set from its next call on, with empty caches.
        Synchronous, so no call on the event loop sees part of each set."""
        for name in PolicyEngine.__slots__:
            setattr(self, name, getattr(other, name))

    def snapshot(self) -> PolicyEngine:
        """Another engine holding this one's policy set as it is now (to ``adopt`` back after a reload
        that could not be recorded)."""
        copy = PolicyEngine.__new__(PolicyEngine)
        copy.adopt(self)
        return copy

    @property
    def version(self) -> str:
        """SHA-256 (hex) of the policy texts and the schema, recorded in the audit log."""
        return self._loaded.version

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """The ``@id`` of every loaded policy, in load order."""
        return tuple(info.policy_id for info in self._by_cedar_id.values())

    def reads_context(self, key: str) -> bool:
        """Whether some policy reads ``context.<key>`` (or the whole ``context``): an attribute no
        policy reads need not be computed."""
        keys = self._loaded.context_keys
        return keys is None or key in keys

    def obligations_of(self, policy_id: str) -> Mapping[str, str]:
        """The annotations (besides ``@id``) of the policy ``policy_id``; empty for an unknown id."""
        return self._obligations_by_id.get(policy_id, {})

    @property
    def approval_policy_ids(self) -> tuple[str, ...]:
        """The ``@id`` of every permit annotated ``@approval(...)``, in load order."""
        return tuple(info.policy_id for info in self._by_cedar_id.values() if "approval" in info.obligations)

    def decide(self, principal: Principal, action: str, resource: ResourceRef, context: Mapping[str, Any]) -> Decision:
        """Decide one request; ``action`` is an MCP method such as ``"tools/call"``.

        Decisions are memoised by Cedar's exact inputs (the action, the principal's and the
        resource's entity JSON, the context JSON as sent to Cedar: only the attributes and argument
        paths policies read), which fix Cedar's answer: evaluation is deterministic and the policy
        set is this engine's. Up to ``DECISION_CACHE_SIZE`` decisions are kept, least recently
        used out; a context longer than ``DECISION_CACHE_KEY_CHARS`` is never kept (memory).
        Failures to build the request are not kept.
        """
        try:
            context_json = build_context(context, self._loaded.context_keys, self._loaded.argument_paths)
            key = (action, _principal_json(principal), resource.entity_json()[0], context_json)
        except Exception as exc:  # noqa: BLE001 - any failure must be a deny (fail closed)
            return Decision.failed(f"policy evaluation failed: {type(exc).__name__}: {exc}")
        decisions = self._decisions
        kept = decisions.get(key)
        if kept is not None:
            decisions.move_to_end(key)
            return kept
        mask = self._narrowed(key[:3], principal, action, resource)
        if mask:  # build_context checked that the arguments are an object (or none)
            mask &= ~self._slicer.unsatisfiable(context.get("arguments") or {})
        (decision,), evaluated = self._evaluate_json(principal, action, [resource], context_json, [mask])
        if evaluated and len(context_json) <= DECISION_CACHE_KEY_CHARS:
            decisions[key] = decision
            if len(decisions) > DECISION_CACHE_SIZE:
                decisions.popitem(last=False)
        return decision

    def _narrowed(
        self, key: tuple[str, str, str], principal: Principal, action: str, resource: ResourceRef
    ) -> int:
        """The slice of a request narrowed by what is known before its context: Cedar partially
        evaluates the scope slice with the context unknown, and a policy whose residual is
        ``false`` (its conditions fail whatever the context, without error: short-circuiting is
        the same in full evaluation) is left out; every other one stays, errors included. Cached
        per ``key`` (action, principal and resource entity JSON), ``DECISION_CACHE_SIZE`` kept.
        Any failure keeps the scope slice (more policies, the same answer)."""
        narrowed = self._narrowed_masks.get(key)
        if narrowed is not None:
            self._narrowed_masks.move_to_end(key)
            return narrowed
        mask = self._slicer.mask(_principal_scope(principal), action, _resource_scope(resource))
        narrowed = mask
        if mask:
            try:
                uid = resource.uid
                request = {
                    "principal": _uid_text(principal.kind, principal.sub),
                    "action": _uid_text("Action", action),
                    "resource": _uid_text(uid["type"], uid["id"]),
                }  # no context: unknown
                handle = _entity_handle(principal, [resource], action)
                result = cedarpy.is_authorized_partial(request, self._slicer.policy_set(mask), handle)
                never = {cedar_id for cedar_id, policy in result.residuals.items() if policy["conditions"] == _FALSE}
                narrowed = mask & ~self._slicer.mask_of(never)
            except Exception:  # noqa: BLE001 - the scope slice answers the same, only slower
                narrowed = mask
        self._narrowed_masks[key] = narrowed
        if len(self._narrowed_masks) > DECISION_CACHE_SIZE:
            self._narrowed_masks.popitem(last=False)
        return narrowed

    def filter_allowed(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[ResourceRef],
        context: Mapping[str, Any],
    ) -> list[bool]:
        """For listings: whether each resource may be acted on, one Cedar batch call per slice.

        Equal, item by item, to ``decide(...).allowed`` with the same context.
        """
        if not resources:
            return []
        return [decision.allowed for decision in self._evaluate(principal, action, resources, context)]

    def filter_listable(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[ResourceRef],
        context: Mapping[str, Any],
    ) -> list[bool]:
        """For ``tools/list`` etc.: whether some arguments exist that allow acting on each resource.

        For ``tools/call`` ``context["arguments"]`` is ignored (still checked) and left
        unknown to Cedar, one partial evaluation per resource (rule in the module
        docstring); for the other actions, whose requests carry no arguments, and when no
        policy reads ``context.arguments``, this is ``filter_allowed``. Never use it to
        allow a call: ``decide`` that with the real arguments. ``iter_listable`` gives the
        same answers one at a time.
        """
        return list(self.iter_listable(principal, action, resources, context))

    def iter_listable(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[ResourceRef],
        context: Mapping[str, Any],
    ) -> Iterator[bool]:
        """``filter_listable``'s answers, one per resource in order, computed as they are taken, so a
        caller on the event loop can yield between them (``bastion.pipeline.stages.inspect``).

        Shared work: the context, entities and request texts are built once per listing; a
        resource whose slice holds no permit is hidden without asking Cedar; resources whose slices
        read no arguments are decided by full evaluation, one batch per slice (the arguments cannot
        change their answer); the rest are partially evaluated against their slice, once per
        slice and values of the resource attributes its conditions read: two resources alike in
        those (tools of one route with the same risk, say) get the same answer, since their scopes
        matched alike and nothing else of the resource reaches the conditions. When a condition
        uses ``resource`` otherwise (``resource == ...``, ``resource in ...``), or the slices are
        not exact on the resource (``PolicySlicer.resource_exact``), each resource is evaluated on
        its own.
        """
        if not resources:
            return
        keys = self._loaded.context_keys
        if action not in _ARGUMENT_ACTIONS or (keys is not None and "arguments" not in keys):
            yield from self.filter_allowed(principal, action, resources, context)
            return
        try:
            record = _context_record(context, keys, {})
            record["arguments"] = _UNKNOWN_ARGUMENTS
            known = {**context, "arguments": {}}
            context_json = json.dumps(record)
            handle = _entity_handle(principal, resources, action)
            principal_text = _uid_text(principal.kind, principal.sub)
            action_text = _uid_text("Action", action)
            scope = _principal_scope(principal)
            masks = [self._slicer.mask(scope, action, _resource_scope(r)) for r in resources]
        except Exception:  # noqa: BLE001 - any failure hides the items (fail closed)
            yield from [False] * len(resources)
            return
        full = {m for m in masks if m & self._slicer.permits and not m & self._argument_readers}
        decided: dict[int, bool] = {}
        alike: dict[tuple[int, str], bool] = {}
        for index, (resource, mask) in enumerate(zip(resources, masks, strict=True)):
            if not mask & self._slicer.permits:
                yield False
            elif mask in full:
                if index not in decided:
                    indexes = [i for i, m in enumerate(masks) if m == mask]
                    batch = self._evaluate(principal, action, [resources[i] for i in indexes], known)
                    decided.update((i, d.allowed) for i, d in zip(indexes, batch, strict=True))
                yield decided.pop(index)
            else:
                try:
                    key = (mask, self._resource_key(mask, resource))
                    if key in alike:
                        yield alike[key]
                        continue
                    uid = resource.uid
                    request = {
                        "principal": principal_text,
                        "action": action_text,
                        "resource": _uid_text(uid["type"], uid["id"]),
                        "context": context_json,
                    }
                    result = cedarpy.is_authorized_partial(request, self._slicer.policy_set(mask), handle)
                    alike[key] = listed = self._listable(result)
                    yield listed
                except Exception:  # noqa: BLE001 - any failure hides the item (fail closed)
                    yield False

    def _resource_key(self, mask: int, resource: ResourceRef) -> str:
        """What of ``resource`` the conditions of the policies in ``mask`` can see, as JSON text: the
        attributes they read, or the whole entity when one uses ``resource`` otherwise. Raises like
        ``ResourceRef.entity``."""
        if mask not in self._resource_reads:
            if len(self._resource_reads) >= _READS_KEPT:
                self._resource_reads.clear()
            union: frozenset[str] | None = frozenset()
            for cedar_id in self._slicer.cedar_ids(mask):
                read = self._loaded.resource_reads.get(cedar_id)
                union = None if read is None or union is None else union | read
            self._resource_reads[mask] = union
        reads = self._resource_reads[mask]
        if reads is None or not self._slicer.resource_exact:
            return resource.entity_json()[0]
        attrs = resource.entity()["attrs"]
        return json.dumps([resource.kind, {name: attrs[name] for name in reads if name in attrs}], sort_keys=True)

    def approval_need(self, resource: ResourceRef, action: str = "tools/call") -> str:
        """For inventories: whether calls on ``resource`` need a person's approval. ``"always"`` when
        every permit that may allow such a call carries ``@approval``, ``"some"`` when some do,
        ``"no"`` when none does (or none may permit). Same partial evaluation and approximation as
        ``may_permit``; a failure answers ``"no"`` (the safe side: shown as callable without one)."""
        try:
            result = self._partial(resource, action)
        except Exception:  # noqa: BLE001 - an inventory shows what it cannot judge as unapproved
            return "no"
        return self._approval_of(result)

    def approval_need_for(
        self, principal: Principal, resource: ResourceRef, context: Mapping[str, Any], action: str = "tools/call"
    ) -> str:
        """For one person's listing (the portal): whether ``principal``'s calls on ``resource`` need a
        person's approval, whatever the arguments. ``"always"`` when every permit that may allow such
        a call carries ``@approval``, ``"some"`` when some do, ``"no"`` when none does or none may
        permit (a forbid that must apply). Unlike ``approval_need`` the principal and the context are
        known (``context`` as for ``filter_listable``; its ``arguments`` are ignored and left unknown),
        so permits naming other principals or times do not count. Never decides a call; a failure
        answers ``"no"`` (as ``approval_need``: the call itself is still decided by ``decide``)."""
        try:
            record = _context_record(context, self._loaded.context_keys, {})
            record["arguments"] = _UNKNOWN_ARGUMENTS
            uid = resource.uid
            request = {
                "principal": _uid_text(principal.kind, principal.sub),
                "action": _uid_text("Action", action),
                "resource": _uid_text(uid["type"], uid["id"]),
                "context": json.dumps(record),
            }
            handle = _entity_handle(principal, [resource], action)
            mask = self._slicer.mask(_principal_scope(principal), action, _resource_scope(resource))
            result = cedarpy.is_authorized_partial(request, self._slicer.policy_set(mask), handle)
        except Exception:  # noqa: BLE001 - a listing shows what it cannot judge as unapproved
            return "no"
        diagnostics = result.diagnostics
        if diagnostics.errors or not self._may_allow(result):
            return "no"
        return self._approval_of(result)

    def may_search_audit(self, principal: Principal, *, now: float) -> bool:
        """Whether ``principal`` may search everyone's audit records (the portal's activity page):
        ``Action::"audit/search"`` on ``AuditLog::"bastion"`` (``_decide_admin``: only permits that
        name the action count). Deny by default; never raises (any failure is false)."""
        entity = {"uid": {"type": "AuditLog", "id": "bastion"}, "attrs": {}, "parents": []}
        return self._decide_admin(principal, "audit/search", entity, now).allowed

    def may_approve_definitions(self, principal: Principal, route: str, *, now: float) -> Decision:
        """Whether ``principal`` may approve the definitions of ``route`` (pin them, releasing what is
        quarantined or hidden): ``Action::"definitions/approve"`` on ``Server::"<route>"``
        (``_decide_admin``: only permits that name the action count). Deny by default; never raises."""
        entity = {"uid": {"type": "Server", "id": route}, "attrs": {"route": route}, "parents": []}
        return self._decide_admin(principal, "definitions/approve", entity, now)

    def _partial(self, resource: ResourceRef, action: str) -> cedarpy.PartialAuthzResult:
        """Cedar's partial answer for ``action`` on ``resource`` with principal and context unknown.
        Raises whatever building the request or Cedar raises."""
        uid = resource.uid
        entity, _ = resource.entity_json()
        action_entity = json.dumps({"uid": {"type": "Action", "id": action}, "attrs": {}, "parents": []})
        handle = _entities(f"[{entity},{action_entity}]")
        request = {"action": _uid_text("Action", action), "resource": _uid_text(uid["type"], uid["id"])}
        mask = self._slicer.mask(None, action, _resource_scope(resource))
        return cedarpy.is_authorized_partial(request, self._slicer.policy_set(mask), handle)

    def may_permit(self, resource: ResourceRef, action: str = "tools/call") -> bool:
        """Whether SOME request could be permitted to ``action`` on ``resource``, whoever asks.

        For inventories (``bastion tools list``), never for a decision. Cedar partially
        evaluates the request with the principal and the whole context unknown (the
        resource and action known, the resource entity as ``decide`` builds it): Allow ->
        true; Deny (a forbid applies whatever the principal and context) -> false; no
        decision -> true when some permit may be determining and no forbid must be. Only the
        policies whose action and resource scope match are evaluated (``bastion.policy.slicing``),
        so a permit scoped to another resource never counts. An approximation from above:
        residuals are not solved. It never answers false for a resource some request
        could use (except when every such request would fail evaluation, which ``decide``
        denies). Any error (Cedar's, or building the request) answers true: the safe
        side for an inventory is to show a tool as reachable.
        """
        try:
            result = self._partial(resource, action)
        except Exception:  # noqa: BLE001 - an inventory shows a tool it cannot judge as reachable
            return True
        return bool(result.diagnostics.errors) or self._may_allow(result)

    def decide_approver(self, approver: Principal, approval: ApprovalRequest, *, now: float) -> Decision:
        """Whether ``approver`` may decide ``approval``: ``Action::"approvals/decide"`` on the
        ``Approval`` entity (attributes in the built-in schema; ``_decide_admin``: only permits that
        name the action count). Deny by default; never raises (any failure is a deny). The rule that
        nobody reviews their own call is the desk's (``bastion.approvals.desk``), not policy's."""
        attrs: dict[str, Any] = {
            "requester": approval.binding.requester.rpartition("\x1f")[2],
            "route": approval.binding.route,
            "tool": approval.binding.tool,
            "risk": approval.risk,
            "classification": approval.classification,
            "kind": approval.kind,
        }
        entity = {"uid": {"type": "Approval", "id": approval.id}, "attrs": attrs, "parents": []}
        return self._decide_admin(approver, "approvals/decide", entity, now)

    def _decide_admin(self, principal: Principal, action: str, entity: dict[str, Any], now: float) -> Decision:
        """Bastion's own ``action`` (``ADMIN_ACTIONS``) on ``entity`` (Cedar JSON form), against the
        policies that may grant it: every forbid, and the permits that name the action
        (``LoadedPolicies.admin_ids``: an unconstrained action makes nobody an approver or an
        auditor), sliced like the rest. Context ``time``, and empty ``arguments`` and ``scopes``,
        ``approved`` false (the schema's ``Context``). Never raises: any failure is a deny."""
        try:
            handle = cedarpy.Entities.from_json_str(f"[{_principal_json(principal)},{json.dumps(entity)}]")
            request = {
                "principal": {"type": principal.kind, "id": principal.sub},
                "action": {"type": "Action", "id": action},
                "resource": entity["uid"],
                "context": admin_context(now),
            }
            resource = Scope((entity["uid"]["type"], entity["uid"]["id"]))
            mask = self._admin.mask(_principal_scope(principal), action, resource)
            result = cedarpy.is_authorized_batch([request], self._admin.policy_set(mask), handle)[0]
            return self._decision(result)
        except Exception as exc:  # noqa: BLE001 - any failure must be a deny (fail closed)
            return Decision.failed(f"policy evaluation failed: {type(exc).__name__}: {exc}")

    def _approval_of(self, result: cedarpy.PartialAuthzResult) -> str:
        """``always`` / ``some`` / ``no``: how many of the permits that may determine a partial answer
        carry ``@approval``."""
        diagnostics = result.diagnostics
        permits = [
            self._by_cedar_id[c]
            for c in {*diagnostics.may_be_determining, *diagnostics.must_be_determining, *diagnostics.reasons}
            if self._by_cedar_id[c].effect == "permit"
        ]
        asking = sum("approval" in info.obligations for info in permits)
        if not permits or asking == 0:
            return "no"
        return "always" if asking == len(permits) else "some"

    def _evaluate(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[ResourceRef],
        context: Mapping[str, Any],
    ) -> list[Decision]:
        """One decision per resource (``decide`` without the memo)."""
        try:
            context_json = build_context(context, self._loaded.context_keys, self._loaded.argument_paths)
        except Exception as exc:  # noqa: BLE001 - any failure must be a deny (fail closed)
            return [Decision.failed(f"policy evaluation failed: {type(exc).__name__}: {exc}")] * len(resources)
        return self._evaluate_json(principal, action, resources, context_json)[0]

    def _evaluate_json(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[ResourceRef],
        context_json: str,
        masks: Sequence[int] | None = None,
    ) -> tuple[list[Decision], bool]:
        """One decision per resource for a context already in Cedar's JSON form, and whether Cedar
        answered (false: the request could not be built or Cedar failed; every decision a failed deny).
        Each resource is evaluated against its slice: ``masks`` when given (one per resource), else
        its scope slice."""
        try:
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}")
            handle = _entity_handle(principal, resources)
            principal_uid = {"type": principal.kind, "id": principal.sub}
            action_uid = {"type": "Action", "id": action}
            if masks is None:
                scope = _principal_scope(principal)
                masks = [self._slicer.mask(scope, action, _resource_scope(resource)) for resource in resources]
            by_mask: dict[int, list[int]] = {}
            for index, mask in enumerate(masks):
                by_mask.setdefault(mask, []).append(index)
            decisions: list[Decision] = [_NO_POLICY] * len(resources)
            for mask, indexes in by_mask.items():
                if not mask:
                    continue  # no policy's scope matches: a default deny, Cedar need not be asked
                requests = [
                    {"principal": principal_uid, "action": action_uid, "resource": resources[i].uid,
                     "context": context_json}
                    for i in indexes
                ]  # fmt: skip
                results = cedarpy.is_authorized_batch(requests, self._slicer.policy_set(mask), handle)
                for index, result in zip(indexes, results, strict=True):
                    decisions[index] = self._decision(result)
            return decisions, True
        except Exception as exc:  # noqa: BLE001 - any failure must be a deny (fail closed)
            failed = Decision.failed(f"policy evaluation failed: {type(exc).__name__}: {exc}")
            return [failed] * len(resources), False

    def _decision(self, result: cedarpy.AuthzResult) -> Decision:
        """Translate one Cedar answer, naming policies by ``@id``."""
        diagnostics = result.diagnostics
        infos = [self._by_cedar_id[cedar_id] for cedar_id in diagnostics.reasons]
        if diagnostics.errors:
            failing = {
                self._by_cedar_id[m].policy_id
                for error in diagnostics.errors
                for m in _CEDAR_ID.findall(error)
                if m in self._by_cedar_id
            }
            if result.decision == cedarpy.Decision.Deny:
                failing.update(info.policy_id for info in infos)
            errors = tuple(_CEDAR_ID.sub(self._rename, error) for error in diagnostics.errors)
            return Decision("deny", tuple(sorted(failing)), {}, errors)
        ids = tuple(sorted(info.policy_id for info in infos))
        obligations, conflicts = _merge_obligations(infos)
        if result.decision == cedarpy.Decision.Deny:
            return Decision("deny", ids, obligations, conflicts)
        if result.decision != cedarpy.Decision.Allow or not infos:
            return Decision.failed(f"Cedar answered {result.decision.value} without a determining policy")
        if conflicts:
            return Decision("deny", ids, {}, conflicts)
        return Decision("allow", ids, obligations)

    def _listable(self, result: cedarpy.PartialAuthzResult) -> bool:
        """Whether a partial answer (arguments unknown) lists its item (module docstring)."""
        diagnostics = result.diagnostics
        if diagnostics.errors or diagnostics.unknown_entities:
            return False
        if _merge_obligations([self._by_cedar_id[c] for c in diagnostics.reasons])[1]:
            return False
        return self._may_allow(result)

    def _may_allow(self, result: cedarpy.PartialAuthzResult) -> bool:
        """Whether a partial answer may still be Allow: Allow; or no decision yet, some permit may
        be determining and no forbid must be."""
        if result.decision == cedarpy.Decision.Allow:
            return True
        if result.decision != cedarpy.Decision.NoDecision:
            return False
        diagnostics = result.diagnostics
        may = {self._by_cedar_id[c].effect for c in diagnostics.may_be_determining}
        must = {self._by_cedar_id[c].effect for c in diagnostics.must_be_determining}
        return "permit" in may and "forbid" not in must

    def _rename(self, match: re.Match[str]) -> str:
        info = self._by_cedar_id.get(match[1])
        return f"`{info.policy_id}`" if info is not None else match[0]


def admin_context(now: float) -> dict[str, Any]:
    """The context of Bastion's own actions (``ADMIN_ACTIONS``) in Cedar's JSON form: ``time``
    (epoch seconds, whole), every other attribute of the schema's ``Context`` empty or false."""
    return {"arguments": {}, "scopes": [], "time": int(now), "approved": False,
            "session_labels": [], "records": 0, "bulk": False}  # fmt: skip


def build_context(
    context: Mapping[str, Any], keep: frozenset[str] | None = None, paths: ArgumentPaths | None = None
) -> str:
    """The Cedar ``context`` record as JSON text (keys in the module docstring).

    Every key is checked, but only those in ``keep`` (None: all) are sent: an attribute no
    policy reads cannot change a decision, and parsing one costs Cedar time (an ``ipaddr``
    value about 24 µs per request). Likewise only the ``paths`` below ``arguments`` that
    policies read (None: all) are converted (``to_cedar_arguments``). Raises
    ``ValueError``/``TypeError`` for an unknown key or a value of the wrong type.
    """
    return json.dumps(_context_record(context, keep, paths))


def _context_record(
    context: Mapping[str, Any], keep: frozenset[str] | None, paths: ArgumentPaths | None = None
) -> dict[str, Any]:
    """The context record of ``build_context`` as a dict in Cedar's JSON value form."""
    unknown = set(context) - _CONTEXT_KEYS
    if unknown:
        raise ValueError(f"unknown context key {sorted(unknown)[0]!r}")
    arguments = context.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise TypeError("context arguments must be a JSON object")
    now = context.get("time")
    if now is None:
        now = int(time.time())
    approved = context.get("approved", False)
    if isinstance(now, bool) or not isinstance(now, int | float) or not isinstance(approved, bool):
        raise TypeError("context time must be a number and approved a bool")
    scopes = context.get("scopes") or ()
    labels = context.get("session_labels") or ()
    for name, strings in (("scopes", scopes), ("session_labels", labels)):
        if isinstance(strings, str) or not all(isinstance(item, str) for item in strings):
            raise TypeError(f"context {name} must be a list of strings")
    records, bulk = context.get("records", 0), context.get("bulk", False)
    if isinstance(records, bool) or not isinstance(records, int) or not 0 <= records <= _LONG_MAX:
        raise TypeError("context records must be a whole number from 0 to 2**63-1")
    if not isinstance(bulk, bool):
        raise TypeError("context bulk must be a bool")
    for key in ("client_id", "session", "ip"):
        value = context.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"context {key} must be a string")
    ip = context.get("ip")
    if ip:
        ip = _ip_text(ip)  # checked even when no policy reads it, like every key
    if keep is None:
        keep = _CONTEXT_KEYS
    record: dict[str, Any] = {}
    if "arguments" in keep:
        record["arguments"] = to_cedar_arguments(arguments, paths)
    else:
        to_cedar_arguments(arguments, {})  # the reserved top-level keys are refused all the same
    if "scopes" in keep:
        record["scopes"] = sorted(set(scopes))
    if "time" in keep:
        record["time"] = int(now)
    if "approved" in keep:
        record["approved"] = approved
    if "session_labels" in keep:
        record["session_labels"] = sorted(set(labels))
    if "records" in keep:
        record["records"] = records
    if "bulk" in keep:
        record["bulk"] = bulk
    for key in ("client_id", "session"):
        value = context.get(key)
        if value and key in keep:
            record[key] = value
    if ip and "ip" in keep:
        record["ip"] = {"__extn": {"fn": "ip", "arg": ip}}
    return record


@functools.lru_cache(maxsize=4096)
def _ip_text(text: str) -> str:
    """The normalised text of the IP address ``text`` (cached: a client's address repeats).
    Raises ``ValueError`` when it is not one."""
    return str(ipaddress.ip_address(text))


def _entity_handle(
    principal: Principal, resources: Sequence[ResourceRef], action: str | None = None
) -> cedarpy.Entities:
    """The principal, the resources and (if given) the action as one parsed entity set
    (cached by its JSON text).

    Raises ``ValueError`` when two refs carry different entities for one uid or Cedar
    rejects the entities, ``TypeError`` for a bad attribute.
    """
    entities: dict[str, str] = {}
    for resource in resources:
        entity, key = resource.entity_json()
        if entities.setdefault(key, entity) != entity:
            raise ValueError(f"two different entities for {key}")
    if action is not None:
        entities["action"] = json.dumps({"uid": {"type": "Action", "id": action}, "attrs": {}, "parents": []})
    return _entities(f"[{_principal_json(principal)},{','.join(entities.values())}]")


@functools.lru_cache(maxsize=4096)
def _uid_text(entity_type: str, entity_id: str) -> str:
    """The entity uid as Cedar text, in the normalized form ``is_authorized_partial`` demands.

    cedarpy's partial evaluation takes request uids only as text (a ``{"type", "id"}`` dict
    is a ``TypeError``) and refuses any text but Cedar's own rendering (Display of
    ``EntityUID``: Rust's ``escape_debug`` of the id, which follows Rust's Unicode tables,
    so ``"\\u{41}"`` for ``A`` is refused). So Cedar prints it: a one-policy set in JSON
    form naming the uid is converted to Cedar text and the uid cut out (about 9 µs, cached).
    Raises ``ValueError`` when Cedar refuses the uid or prints something unexpected.
    """
    uid = {"type": entity_type, "id": entity_id}
    policy = {
        "effect": "permit",
        "principal": {"op": "==", "entity": uid},
        "action": {"op": "All"},
        "resource": {"op": "All"},
        "conditions": [],
    }
    text = cedarpy.policies_from_json_str(
        json.dumps({"staticPolicies": {"p": policy}, "templates": {}, "templateLinks": []})
    )
    if not (text.startswith(f'{_EST_PREFIX}{entity_type}::"') and text.endswith(f'"{_EST_SUFFIX}')):
        raise ValueError(f"unexpected Cedar rendering of a {entity_type} uid: {text[:80]!r}")
    return text[len(_EST_PREFIX) : -len(_EST_SUFFIX)]


_PER_POLICY = frozenset({"rate", "quota", "rate_per"})
"""Obligations that belong to their own policy (each policy's limit is counted on its own), never merged."""


def _merge_obligations(infos: Sequence[PolicyInfo]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Union the obligations; a key with two values is a conflict (reported as an error). The
    per-policy ones (``@rate``, ``@quota``, ``@rate_per``) are left out: read them per policy
    (``PolicyEngine.obligations_of``). ``@redact`` values are merged as the union of the classes
    they name, never a conflict (``bastion.scan.redact_classes.merge_redact``: ``"secrets"`` and
    ``"pii"`` give ``"secrets,pii"``)."""
    merged: dict[str, str] = {}
    conflicts: list[str] = []
    for info in sorted(infos, key=lambda i: i.policy_id):
        for key, value in info.obligations.items():
            if key in _PER_POLICY:
                continue
            if key == "redact":  # validated at load: a union of classes
                merged[key] = merge_redact(merged.get(key, value), value)
            elif merged.setdefault(key, value) != value:
                conflicts.append(f"conflicting obligation @{key}: {merged[key]!r} and {value!r}")
    return merged, tuple(conflicts)


@functools.lru_cache(maxsize=4096)
def _principal_scope(principal: Principal) -> Scope:
    """The principal's uid and ancestors (its groups) for slicing, cached per principal."""
    return Scope((principal.kind, principal.sub), tuple(("Group", group) for group in principal.groups))


def _resource_scope(resource: ResourceRef) -> Scope:
    """The resource's uid and ancestors (its server; none for a server) for slicing."""
    uid = resource.uid
    parents = () if resource.kind == "Server" else (("Server", resource.route),)
    return Scope((uid["type"], uid["id"]), parents)


@functools.lru_cache(maxsize=4096)
def _principal_json(principal: Principal) -> str:
    """The principal's entity as JSON text, cached per principal."""
    return json.dumps(principal_entity(principal))


@functools.lru_cache(maxsize=1024)
def _entities(entities_json: str) -> cedarpy.Entities:
    """A parsed entity set, cached by its JSON text: Cedar parses an entity with its
    attributes in about 15 µs, and the same principal meets the same tools again and again.
    Raises ``ValueError`` when Cedar rejects the entities.
    """
    return cedarpy.Entities.from_json_str(entities_json)
