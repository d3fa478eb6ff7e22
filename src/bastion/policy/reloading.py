"""Hot reload of the policy sets and the routes: on SIGHUP, on a watched file's change
(``policy.watch``), or when another replica reloaded (a Redis notification), without a restart.

``PolicyReloader.reload`` re-reads the configuration file and validates it completely first
(``load_config``: the YAML, every key, every policy file and the schema through Cedar's
validator). It applies a change to the ``policy`` and ``routes`` sections (the routes when it was
given ``routes``, a ``RouteChanges``: the gateway's ``bastion.transport.route_swap.RouteSwap``);
a change anywhere else (identity, stores, limits, ...) is refused as needing a restart, naming the
section, and so is a policy set that would need a request-path stage the running gateway did not
place (policies gaining ``@rate`` or ``@quota`` with no limits stage; data-flow labels starting or
stopping; a shadow set appearing or going). The routes added or changed are then built and
started (``RouteChanges.prepare``: a stdio command that does not start refuses the reload). On any
error the running policy sets and routes stay, the error is logged, and a ``policy/reload`` record
says it was refused and why (the action keeps its name for the routes too: one record per reload).

A reload that is applied puts the new set in force in place (``PolicyEngine.adopt``: every stage
and filter holding the engine decides with it from its next call on), swaps the routes
(``RouteChanges.commit``) and at once writes a durable ``policy/reload`` record carrying the new
set's version and, when routes changed, ``arguments.routes`` (``added``, ``removed``, ``changed``
names); the log commits in order, so that record precedes any decision of the new set. When it
cannot be written, the old sets and routes come back (no record, no change: fail closed). Only
then are the withdrawn routes retired (``RouteChanges.retire``: their calls in flight finish).
A call decided before keeps the version it was decided with in its record
(``notes["policy_version"]``), and an approval bound to the old version no longer matches.

Sources: docs/architecture.md, "Hot reload"; issue 17, "Configuration changes without restart".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bastion import audit
from bastion.audit.build import decision_body
from bastion.config import BastionConfig, RouteSettings
from bastion.errors import BastionError, ConfigError, clip
from bastion.ids import new_id
from bastion.policy.engine import PolicyEngine

__all__ = ["PolicyReloader", "ReloadResult", "ReloadTrigger", "RouteChanges", "RouteDiff", "RoutePlan", "route_diff"]

logger = logging.getLogger(__name__)

ReloadTrigger = str
"""What asked for a reload: ``"sighup"``, ``"file change"``, ``"replica <id>"``, ``"api"`` (recorded)."""


@dataclass(frozen=True, slots=True)
class RouteDiff:
    """The route names a reload adds, removes and changes (any setting of the route differs)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def record(self) -> dict[str, list[str]]:
        """The record's ``arguments.routes``."""
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed)}


def route_diff(running: Sequence[RouteSettings], new: Sequence[RouteSettings]) -> RouteDiff:
    """What changes from the routes ``running`` to ``new``, by name, each list in the new (or, for the
    removed, the running) configuration's order."""
    old = {route.name: route for route in running}
    names = {route.name for route in new}
    return RouteDiff(
        added=tuple(r.name for r in new if r.name not in old),
        removed=tuple(r.name for r in running if r.name not in names),
        changed=tuple(r.name for r in new if r.name in old and old[r.name] != r),
    )


class RoutePlan(Protocol):
    """Routes built and started for a reload, not yet serving (``RouteChanges.prepare``)."""

    @property
    def diff(self) -> RouteDiff:
        """What the plan changes."""
        ...


class RouteChanges(Protocol):
    """The routes side of a reload (``bastion.transport.route_swap.RouteSwap`` on the gateway)."""

    async def prepare(self, config: BastionConfig) -> RoutePlan | None:
        """Build and start the routes ``config`` adds or changes; ``None`` when its routes are the
        running ones. Raises (``ConfigError``, ``UpstreamUnavailable``, ...) when one cannot be built or
        started, having stopped what it started."""
        ...

    def commit(self, plan: RoutePlan) -> None:
        """Serve the plan's routes and stop serving the ones it withdraws (no await: one step)."""
        ...

    async def rollback(self, plan: RoutePlan) -> None:
        """Undo ``commit`` (the withdrawn routes serve again) and stop the plan's routes."""
        ...

    async def discard(self, plan: RoutePlan) -> None:
        """Stop the plan's routes, never committed."""
        ...

    def retire(self, plan: RoutePlan) -> None:
        """After a recorded ``commit``: end the withdrawn routes in the background (their calls in
        flight finish first, within ``server.drain_s``)."""
        ...


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """``applied``: the new sets (and routes) are in force; ``version``: the enforced set's version
    after the attempt; ``previous``: before it; ``error``: why it was refused (``None`` when applied
    or when nothing changed); ``routes``: the routes an applied reload changed; ``changed``:
    whether the version moved."""

    applied: bool
    version: str
    previous: str
    error: str | None = None
    routes: RouteDiff = RouteDiff()

    @property
    def changed(self) -> bool:
        """Whether the enforced policy set is another one now."""
        return self.version != self.previous


@dataclass(frozen=True, slots=True)
class _Candidate:
    config: BastionConfig
    engine: PolicyEngine
    shadow: PolicyEngine | None


class PolicyReloader:
    """Swaps the running ``engine`` (and ``shadow``) for the sets the configuration at ``path`` names.

    ``running`` is the configuration the gateway started with (its ``policy`` and ``routes``
    sections are replaced by each applied reload); ``limits_placed``: whether the request path has a
    limits stage; ``tracks_labels(engine, shadow, routes)``: whether those sets, with those routes,
    need data-flow labels kept (``Gateway._tracks_labels_of``); ``routes``: what applies a change of
    the routes (``None``: a change of the routes is refused as needing a restart). Reloads run one at
    a time.
    """

    def __init__(
        self,
        path: Path,
        running: BastionConfig,
        engine: PolicyEngine,
        shadow: PolicyEngine | None,
        *,
        log: audit.AuditLog,
        limits_placed: bool,
        tracks_labels: Callable[[PolicyEngine, PolicyEngine | None, Sequence[RouteSettings]], bool],
        load: Callable[[Path], BastionConfig] | None = None,
        routes: RouteChanges | None = None,
    ) -> None:
        from bastion.config import load_config

        self.path = path
        self.running = running
        self._engine = engine
        self._shadow = shadow
        self._log = log
        self._limits_placed = limits_placed
        self._tracks_labels = tracks_labels
        self._labels = tracks_labels(engine, shadow, running.routes)
        self._load = load or load_config
        self._routes = routes
        self._lock = asyncio.Lock()

    @property
    def watched_files(self) -> tuple[Path, ...]:
        """The files whose change asks for a reload (``policy.watch``): the configuration, the policy
        files and directories, the schema."""
        policy = self.running.policy
        extra = (policy.schema_file,) if policy.schema_file is not None else ()
        return (self.path, *policy.files, *policy.shadow_files, *extra)

    async def reload(self, trigger: ReloadTrigger) -> ReloadResult:
        """Validate the configuration at ``path`` and apply its policy sets and routes (module
        docstring). Never raises (except ``CancelledError``): a refusal is the result's ``error``,
        logged and recorded when the log accepts the record."""
        async with self._lock:
            previous = self._engine.version
            try:
                candidate = await asyncio.to_thread(self._validated)
                plan = await self._routes.prepare(candidate.config) if self._routes is not None else None
            except Exception as exc:  # noqa: BLE001 - any failure refuses the reload; the running sets stay
                return await self._refused(trigger, previous, exc)
            version = candidate.engine.version
            shadow_version = candidate.shadow.version if candidate.shadow is not None else None
            unchanged = shadow_version == (self._shadow.version if self._shadow is not None else None)
            if version == previous and unchanged and plan is None:
                logger.info("reload (%s): neither the policy sets nor the routes changed (%s)", trigger, version[:12])
                return ReloadResult(False, previous, previous)
            return await self._apply(trigger, candidate, plan, previous)

    async def _apply(self, trigger: ReloadTrigger, candidate: _Candidate, plan: RoutePlan | None,
                     previous: str) -> ReloadResult:  # fmt: skip
        """Put ``candidate`` (and ``plan``) in force, then record it; no record, no change."""
        version = candidate.engine.version
        diff = plan.diff if plan is not None else RouteDiff()
        # In force first, then recorded: the record is queued before any decision of the new set,
        # and the log commits in order. No durable record, no change: the old sets come back.
        pairs = [(self._engine, candidate.engine)]
        if self._shadow is not None and candidate.shadow is not None:
            pairs.append((self._shadow, candidate.shadow))
        before = [(running, running.snapshot()) for running, _ in pairs]
        for running, new in pairs:
            running.adopt(new)
        try:
            if plan is not None and self._routes is not None:
                self._routes.commit(plan)
            await self._record(trigger, version, previous, None, routes=diff, strict=True)
        except Exception as exc:  # noqa: BLE001 - no durable record of the change, no change
            for running, old in before:
                running.adopt(old)
            if plan is not None and self._routes is not None:
                await self._routes.rollback(plan)
            logger.error("reload (%s) not applied: the swap or its audit record failed: %s", trigger, exc)
            return ReloadResult(False, previous, previous, f"the swap or its audit record failed: {exc}")
        self.running = candidate.config
        if plan is not None and self._routes is not None:
            self._routes.retire(plan)
        logger.warning("reload (%s): policy set %s is in force (was %s); routes added %s, removed %s, changed %s",
                       trigger, version[:12], previous[:12], list(diff.added), list(diff.removed),
                       list(diff.changed))  # fmt: skip
        return ReloadResult(True, version, previous, routes=diff)

    async def _refused(self, trigger: ReloadTrigger, previous: str, exc: Exception) -> ReloadResult:
        """Log and record why the reload is refused; the running configuration stays."""
        error = exc.message if isinstance(exc, BastionError) else f"{type(exc).__name__}: {exc}"
        logger.error("reload (%s) refused; the running policies and routes stay: %s", trigger, error)
        await self._record(trigger, previous, previous, error)
        return ReloadResult(False, previous, previous, error)

    def _validated(self) -> _Candidate:
        """The new configuration and its engines, or ``ConfigError`` saying why they cannot replace the
        running ones (on a worker thread: Cedar's validation of a large set takes a while)."""
        config = self._load(self.path)
        reloadable = ("policy", "routes") if self._routes is not None else ("policy",)
        changed = _changed_sections(self.running, config, reloadable)
        if changed:
            raise ConfigError(
                f"only the {' and '.join(reloadable)} section{'s' if len(reloadable) > 1 else ''} reload"
                f"{'' if len(reloadable) > 1 else 's'}; restart to apply the change to {', '.join(changed)}"
            )
        policy = config.policy
        engine = PolicyEngine.load(policy.files, policy.schema_file)
        shadow = PolicyEngine.load(policy.shadow_files, policy.schema_file) if policy.shadow_files else None
        if (shadow is None) != (self._shadow is None):
            raise ConfigError("policy.shadow_files added or removed: restart to apply")
        if engine.limited_policy_ids and not self._limits_placed:
            raise ConfigError(
                f"policies {', '.join(sorted(engine.limited_policy_ids))} carry @rate or @quota and the running "
                "gateway counts no limits: restart to apply"
            )
        if self._tracks_labels(engine, shadow, config.routes) != self._labels:
            raise ConfigError(
                "the new policies or routes start or stop data-flow labels (context.session_labels): restart to apply"
            )
        return _Candidate(config, engine, shadow)

    async def _record(
        self, trigger: ReloadTrigger, version: str, previous: str, error: str | None, *,
        routes: RouteDiff = RouteDiff(), strict: bool = False,
    ) -> None:  # fmt: skip
        """Commit the ``policy/reload`` record (``strict``: raise when it cannot be written; else log);
        ``arguments.routes`` when ``routes`` changed."""
        body = decision_body(
            route="-",
            method="policy/reload",
            effect="deny" if error else "allow",
            policy_ids=(),
            obligations={},
            reason="reload_refused" if error else None,
            policy_version=version,
            arguments={"trigger": trigger, "previous_version": previous, **_error(error), **_routes(routes)},
            principal=None,
            target=None,
            session=None,
            decision_id=new_id(),
        )
        try:
            await self._log.append(body)
        except Exception as exc:
            if strict:
                raise
            logger.error("the policy/reload record could not be written: %s", exc)


def _changed_sections(running: BastionConfig, new: BastionConfig, reloadable: tuple[str, ...]) -> list[str]:
    """The top-level configuration keys other than the ``reloadable`` ones whose values differ."""
    old_dump = running.model_dump(exclude=set(reloadable))
    new_dump = new.model_dump(exclude=set(reloadable))
    return sorted(key for key in old_dump.keys() | new_dump.keys() if old_dump.get(key) != new_dump.get(key))


def _routes(routes: RouteDiff) -> dict[str, dict[str, list[str]]]:
    """The record's ``routes`` argument: the routes added, removed and changed (none when none did)."""
    return {"routes": routes.record()} if routes else {}


def _error(error: str | None) -> dict[str, str]:
    """The record's ``error`` argument: the refusal's text, clipped (none when applied)."""
    return {"error": clip(error, 1000)} if error else {}
