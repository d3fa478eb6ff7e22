"""The definition guard: one per route, it decides whether each definition the upstream declares is served.

Issue 15, "Pinning and quarantine" and the definition scanner's verdicts (docs/architecture.md,
"Pinning and quarantine"). Every definition that reaches a client or a call is judged here, by
(kind, name, SHA-256 of its canonical JSON): the message filter ``scan`` judges each list result
(for tools, the route's whole catalog: what the list filter just learnt, including the tools this
caller may not see) and the check stage ``definitions`` judges the target of each call (the
catalog's definition, loaded by the classify stage when unknown). A definition that is not judged
is never served, so every path that fills a catalog is covered where the catalog is used.

One guard per route, shared by every user of the route: pins are the route's, and only an
administrator (or the route's first sight, ``pin: first_use``) makes them, never a user's
catalog. A judgement:

1. the scanner (``scanner(kind, definition, others=...)``, ``bastion.scan``) runs once per definition
   hash (cached; a scanner that raises is a high-severity ``scanner-error`` finding: fail closed);
   ``on_finding`` gives the worst finding's action;
2. a definition a person approved exactly (a reviewed pin of this hash) is served, findings and all;
3. where the kind is pinned (``DefinitionSettings.pins``): no pin while the kind has a baseline
   (or ``pin: strict``) is ``new``; a pin of another hash is ``drift``; no pin and no baseline
   is pinned at once under ``first_use`` (the first replica's pin wins), served ``unpinned``
   under ``admin``. ``new`` and ``drift`` are quarantined;
4. a finding whose action is ``hide`` withholds the definition; ``block`` blocks the route (every
   request refused) until an administrator approves; ``warn`` is an audit record.

Each definition held back (and, under ``admin`` before the first approval, each one seen) is kept
in the ``PinStore`` with its canonical JSON, for ``bastion tools diff`` and the portal. Audit
records (method ``definition/<step>``, target the name): ``pinned`` (first use), ``drift``,
``quarantined``, ``finding``, ``blocked``, ``approved`` (by whom); each once per definition, as
the store says when it was newly held.

Verdicts are cached by (kind, name, hash) in memory: the served path costs a dictionary lookup.
The store is re-read when its version changed (another replica or process wrote), looked at most
every ``recheck_s`` seconds and only on a refusal: a quarantined item asked for, a blocked route.
An approval made through this process (``approve``) takes effect at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any, cast

from bastion.audit.store import AuditLog
from bastion.catalog.definitions import definition_sha256
from bastion.catalog.pins import DEFINITION_KINDS, FIRST_USE, HeldDefinition, Pin, PinnedItem, PinStore
from bastion.catalog.verdicts import (
    SCANNER_ERROR,
    Plan,
    Scanner,
    Verdict,
    blocked_error,
    canonical_text,
    definition_record,
    hold_reason,
    person_label,
    plan_for,
    refusal,
    verdict_of,
)
from bastion.config.definitions import DefinitionSettings
from bastion.errors import DefinitionQuarantined, RouteBlocked
from bastion.principal import Principal
from bastion.scan.findings import DefinitionKind, Finding

__all__ = ["DefinitionGuard", "Judged"]

logger = logging.getLogger(__name__)

_MAX_CACHED = 50_000

Judged = tuple[str, Mapping[str, Any], str]
"""``(name, definition, sha256)``: one definition to judge."""


class DefinitionGuard:
    """Pins and scanner verdicts for the definitions of route ``route`` (see the module docstring).

    ``store`` keeps the pins (shared by the gateway's replicas and the CLI); ``log`` receives the
    records; ``scanner`` (optional) finds poisoning; ``others()`` names the tools of the other routes
    (the scanner's shadowing rule gets them and this route's other tools); ``clock`` gives epoch
    seconds. Call ``load`` before use.
    """

    def __init__(
        self,
        route: str,
        settings: DefinitionSettings,
        *,
        store: PinStore,
        log: AuditLog,
        scanner: Scanner | None = None,
        others: Callable[[], Collection[str]] = frozenset,
        clock: Callable[[], float] = time.time,
        recheck_s: float = 1.0,
    ) -> None:
        self.route = route
        self.settings = settings
        self._store = store
        self._log = log
        self._scanner = scanner
        self._others = others
        self._clock = clock
        self._recheck_s = recheck_s
        self._checked = float("-inf")
        self._version = -1
        self._pins: dict[tuple[DefinitionKind, str], Pin] = {}
        self._baselines: set[DefinitionKind] = set()
        self._blocking: dict[tuple[DefinitionKind, str], str] = {}
        self._verdicts: OrderedDict[tuple[DefinitionKind, str, str], Verdict] = OrderedDict()
        self._seen: OrderedDict[tuple[DefinitionKind, str], tuple[Mapping[str, Any], str]] = OrderedDict()
        self._scans: OrderedDict[tuple[DefinitionKind, str], tuple[Finding, ...]] = OrderedDict()
        self._noted: OrderedDict[tuple[DefinitionKind, str, str], None] = OrderedDict()
        self._lock = asyncio.Lock()

    # state
    @property
    def active(self) -> bool:
        """Whether anything is judged: some kind is pinned, or a scanner runs."""
        return self.settings.pin != "off" or self._scanner is not None

    @property
    def blocked(self) -> bool:
        """Whether a finding blocks the route (until an administrator approves)."""
        return bool(self._blocking)

    def tool_names(self) -> frozenset[str]:
        """The tools of the route this process knows: pinned or seen."""
        return frozenset(name for kind, name in (*self._pins, *self._seen) if kind == "tool")

    async def load(self) -> None:
        """(Re-)read the route's pins, baselines and blocking definitions from the store; forget the
        cached verdicts (not the scanner's findings: they depend on the definition only)."""
        version = await self._store.version(self.route)
        pins = await self._store.pins(self.route)
        held = await self._store.held(self.route)
        self._baselines = set(await self._store.baselines(self.route))
        self._pins = {(pin.kind, pin.name): pin for pin in pins}
        self._blocking = {(item.kind, item.name): item.sha256 for item in held if item.action == "block"}
        self._verdicts.clear()
        self._version = version
        self._checked = time.monotonic()

    async def refresh(self) -> bool:
        """Re-read the store if its version changed (looked at most every ``recheck_s`` seconds);
        returns whether it was re-read."""
        now = time.monotonic()
        if now - self._checked < self._recheck_s:
            return False
        self._checked = now
        if await self._store.version(self.route) == self._version:
            return False
        await self.load()
        return True

    # judging
    def cached(self, kind: DefinitionKind, name: str, sha256: str) -> Verdict | None:
        """The verdict already made on this exact definition, or ``None`` (no I/O)."""
        return self._verdicts.get((kind, name, sha256))

    async def judge(
        self, kind: DefinitionKind, items: Sequence[Judged], *, principal: Principal | None = None
    ) -> list[Verdict]:
        """The verdicts on ``items`` (``(name, definition, sha256)``), in order. A definition not
        judged before is scanned and compared with its pin; what that changes is written to the
        store and recorded (in one transaction and one group commit for the whole list). Raises
        ``AuditUnavailable`` or the store's error (callers fail closed)."""
        verdicts = [self._verdicts.get((kind, name, sha256)) for name, _, sha256 in items]
        seen = self._seen
        for name, definition, sha256 in items:
            seen[(kind, name)] = (definition, sha256)
        while len(seen) > _MAX_CACHED:  # the oldest name first seen goes
            seen.popitem(last=False)
        if all(verdict is not None for verdict in verdicts):
            return cast("list[Verdict]", verdicts)
        async with self._lock:
            misses = {
                (name, sha256): (name, definition, sha256)
                for (name, definition, sha256), verdict in zip(items, verdicts, strict=True)
                if verdict is None and (kind, name, sha256) not in self._verdicts
            }
            if misses:
                await self._judge_misses(kind, list(misses.values()), principal)
        return [self._verdicts[(kind, name, sha256)] for name, _, sha256 in items]

    def seen(self, kind: DefinitionKind, name: str) -> tuple[Mapping[str, Any], str] | None:
        """The last definition of ``(kind, name)`` seen on the route and its hash, or ``None``."""
        return self._seen.get((kind, name))

    async def listed(self, kind: DefinitionKind, *, complete: bool) -> None:
        """A listing of ``kind`` was judged; ``complete`` when it held every definition of the kind.
        Under ``first_use`` a complete listing starts the kind's baseline: from then on a definition
        without a pin is new."""
        if not complete or self.settings.pin != "first_use" or not self.settings.pins(kind):
            return
        if kind in self._baselines:
            return
        await self._store.start_baseline(self.route, kind, self._clock())
        self._baselines.add(kind)

    async def admit(
        self,
        kind: DefinitionKind,
        name: str,
        definition: Mapping[str, Any] | None,
        sha256: str | None = None,
        *,
        principal: Principal | None = None,
    ) -> None:
        """Let a call on ``(kind, name)`` go on, or raise ``RouteBlocked`` (the route is blocked) or
        ``DefinitionQuarantined`` (its definition is held). ``definition`` is the one the caller's
        catalog holds (``sha256`` its hash, worked out when not given); ``None``: the last one seen
        on the route. A tool that was never seen, on a
        route whose tools are pinned with a baseline, is refused as ``unlisted`` (its definition
        cannot be compared with a pin); another kind never listed is let through (policy decides)."""
        if self._blocking:
            await self.refresh()
            if self._blocking:
                raise self.blocked_error()
        if definition is None:
            seen = self._seen.get((kind, name))
            if seen is not None:
                definition, sha256 = seen
        if definition is None:
            if kind == "tool" and self.settings.pins(kind) and self._pins_started(kind):
                raise self.refusal(kind, name, Verdict(False, "unlisted", ""))
            return
        sha256 = sha256 or definition_sha256(dict(definition))  # a catalog gives it: no hashing per call
        verdict = self._verdicts.get((kind, name, sha256))
        if verdict is not None and verdict.served:  # the hot path: judged before, served
            self._seen[(kind, name)] = (definition, sha256)
            return
        verdict = (await self.judge(kind, [(name, definition, sha256)], principal=principal))[0]
        if verdict.served:
            return
        if await self.refresh():
            verdict = (await self.judge(kind, [(name, definition, sha256)], principal=principal))[0]
            if self._blocking:
                raise self.blocked_error()
        if not verdict.served:
            raise self.refusal(kind, name, verdict)

    # approving
    async def approve(
        self,
        items: Sequence[PinnedItem] | None,
        *,
        approver: Principal,
        policy_ids: Sequence[str] = (),
        reason: str = "",
        whole_route: bool = False,
    ) -> list[Pin]:
        """Pin the held definitions ``items`` (``(kind, name, sha256)``: exactly those hashes;
        ``None``: every definition held now). ``whole_route`` (implied by ``None``): the route's
        catalog as approved, so every kind's baseline starts (a prompt that appears later is new);
        otherwise the baselines of the kinds approved start. Records ``definition/approved`` for
        each, by ``approver`` (whom the caller let approve: ``policy_ids`` are the permits that did),
        with ``reason`` (kept to 500 characters), and re-reads the store. Returns the new pins; a
        definition that changed since it was shown is left out."""
        held = {(item.kind, item.name): item for item in await self._store.held(self.route)}
        chosen = [(h.kind, h.name, h.sha256) for h in held.values()] if items is None else list(items)
        before = {(pin.kind, pin.name): pin for pin in await self._store.pins(self.route)}
        pins = await self._store.approve(
            self.route, chosen, approver=person_label(approver), now=self._clock(),
            baseline=DEFINITION_KINDS if items is None or whole_route else (),
        )  # fmt: skip
        why = " ".join(reason.split())[:500]
        records = []
        for pin in pins:
            previous = before.get((pin.kind, pin.name))
            item = held.get((pin.kind, pin.name))
            detail = {"sha256": pin.sha256, "previous_sha256": previous.sha256 if previous else None,
                      "held_as": item.reason if item else None, "reason": why,
                      "rules": sorted({str(f.get("rule")) for f in item.findings}) if item else []}  # fmt: skip
            records.append(self._body("approved", pin.kind, pin.name, approver, "allow", None, detail, policy_ids))
        await asyncio.gather(*(self._log.append(body) for body in records))
        await self.load()
        return pins

    async def record_refused(self, person: Principal | None, code: str) -> None:
        """Record an approval of the route's definitions that was refused (``code``: ``policy_denied``,
        ``form``) as ``definition/refused``. Never raises."""
        try:
            body = definition_record(self.route, "refused", None, None, person, effect="deny", reason=code, detail={})
            await self._log.append(body)
        except Exception:
            logger.exception("recording a refused approval of %s's definitions failed", self.route)

    # answers
    def refusal(self, kind: DefinitionKind, name: str, verdict: Verdict) -> DefinitionQuarantined:
        """The error that refuses a call on a held definition (``bastion.catalog.verdicts.refusal``)."""
        return refusal(self.route, kind, name, verdict)

    def blocked_error(self) -> RouteBlocked:
        """The error every request on the blocked route gets."""
        return blocked_error(self.route, self._blocking)

    # inside
    def _pins_started(self, kind: DefinitionKind) -> bool:
        return kind in self._baselines or self.settings.pin == "strict"

    def _first_note(self, key: tuple[DefinitionKind, str, str]) -> bool:
        """Whether the records of a definition that is not held are made for the first time here."""
        if key in self._noted:
            return False
        self._noted[key] = None
        if len(self._noted) > _MAX_CACHED:
            self._noted.popitem(last=False)
        return True

    def _scan(self, kind: DefinitionKind, name: str, definition: Mapping[str, Any], sha256: str) -> tuple[Finding, ...]:
        """The scanner's findings on a definition, once per hash (the other tools' names as they are
        when it is first seen)."""
        if self._scanner is None:
            return ()
        key = (kind, sha256)
        found = self._scans.get(key)
        if found is None:
            others = {*self._others(), *(self.tool_names() - {name} if kind == "tool" else self.tool_names())}
            try:
                found = tuple(self._scanner(kind, definition, others=others))
            except Exception:  # a scanner that fails holds the definition (fail closed)
                logger.exception("route %s: the definition scanner failed on %s %s", self.route, kind, sha256)
                found = (SCANNER_ERROR,)
            self._scans[key] = found
            if len(self._scans) > _MAX_CACHED:
                self._scans.popitem(last=False)
        return found

    def _plan(self, kind: DefinitionKind, name: str, definition: Mapping[str, Any], sha256: str) -> Plan:
        """Steps 1 to 3 of the module docstring, in memory: the findings, and the definition against its pin."""
        return plan_for(
            kind, name, definition, sha256, self._scan(kind, name, definition, sha256), settings=self.settings,
            pin=self._pins.get((kind, name)), started=self._pins_started(kind),
        )  # fmt: skip

    async def _judge_misses(self, kind: DefinitionKind, items: list[Judged], principal: Principal | None) -> None:
        now = self._clock()
        plans = [self._plan(kind, name, definition, sha256) for name, definition, sha256 in items]
        records: list[dict[str, Any]] = []
        automatic = [made for made in plans if made.auto_pin]
        if automatic:
            wanted = [Pin(self.route, kind, p.name, p.sha256, canonical_text(p.definition), FIRST_USE, False, now)
                      for p in automatic]  # fmt: skip
            for made, pin, kept in zip(automatic, wanted, await self._store.pin_first(wanted), strict=True):
                self._pins[(kind, made.name)] = made.pinned = kept
                if kept == pin:  # this process pinned it (a replica that pinned it first records it)
                    records.append(self._body("pinned", kind, made.name, principal, "allow", None,
                                              {"sha256": made.sha256, "approver": FIRST_USE}))  # fmt: skip
                elif kept.sha256 != made.sha256:  # another replica pinned another definition first
                    made.reason = "drift"
        holds: list[tuple[Plan, HeldDefinition]] = []
        for made in plans:
            reason = hold_reason(made)
            if reason is not None:
                findings = tuple(asdict(f) for f in made.findings)
                holds.append((made, HeldDefinition(
                    self.route, kind, made.name, made.sha256, canonical_text(made.definition), reason,
                    made.action or "", findings, now, now,
                )))  # fmt: skip
        newly = await self._store.hold([item for _, item in holds]) if holds else []
        new_by_name = {made.name: fresh for (made, _), fresh in zip(holds, newly, strict=True)}
        for made in plans:
            records.extend(self._settle(made, principal, new_by_name.get(made.name)))
        if records:
            await asyncio.gather(*(self._log.append(body) for body in records))

    def _settle(self, made: Plan, principal: Principal | None, newly_held: bool | None) -> list[dict[str, Any]]:
        """Cache the verdict of ``made`` and mark a blocking finding; returns the records it asks for
        (``newly_held``: the store's answer for its held definition, ``None`` when not held)."""
        kind, name = made.kind, made.name
        accepted = made.reason == "reviewed"
        verdict = verdict_of(made)
        blocking = verdict.reason == "blocked"
        key = (kind, name, made.sha256)
        self._verdicts[key] = verdict
        if len(self._verdicts) > _MAX_CACHED:
            self._verdicts.popitem(last=False)
        records: list[dict[str, Any]] = []
        # held now for the first time (the store says, across replicas), or not held: once per process
        first_time = newly_held if newly_held is not None else self._first_note(key)
        if blocking:
            was_blocked = bool(self._blocking)
            self._blocking[(kind, name)] = made.sha256
            if first_time and not was_blocked:
                records.append(self._body("blocked", kind, name, principal, "deny", "route_blocked",
                                          {"sha256": made.sha256}))  # fmt: skip
        if not first_time:
            return records
        if made.reason == "drift" and made.pinned is not None:
            pin = made.pinned
            records.append(self._body("drift", kind, name, principal, "deny", "drift", {
                "sha256": made.sha256, "pinned_sha256": pin.sha256, "pinned_by": pin.approver,
                "pinned_at": pin.pinned_at,
            }))  # fmt: skip
        if made.findings and not accepted:
            records.append(self._body(
                "finding", kind, name, principal, "allow" if made.action == "warn" else "deny",
                None if made.action == "warn" else "finding",
                {"sha256": made.sha256, "action": made.action,
                 "findings": [{"rule": f.rule, "severity": f.severity, "message": f.message, "path": f.path}
                              for f in made.findings]},
            ))  # fmt: skip
        if not verdict.served:
            records.append(self._body("quarantined", kind, name, principal, "deny", verdict.reason,
                                      {"sha256": made.sha256}))  # fmt: skip
        return records

    def _body(
        self,
        step: str,
        kind: DefinitionKind,
        name: str,
        principal: Principal | None,
        effect: str,
        reason: str | None,
        detail: dict[str, Any],
        policy_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        return definition_record(self.route, step, kind, name, principal, effect=effect, reason=reason,
                                 detail=detail, policy_ids=policy_ids)  # fmt: skip
