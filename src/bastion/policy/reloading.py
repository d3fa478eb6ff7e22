"""Hot reload of the policy sets: on SIGHUP, on a policy file's change (``policy.watch``), or when
another replica reloaded (a Redis notification), without a restart.

``PolicyReloader.reload`` re-reads the configuration file and validates it completely first
(``load_config``: the YAML, every key, every policy file and the schema through Cedar's
validator). It applies only a change confined to the ``policy`` section; a change anywhere else
(routes, identity, stores, ...) is refused as needing a restart, and so is a policy set that would
need a request-path stage the running gateway did not place (policies gaining ``@rate`` or
``@quota`` with no limits stage; data-flow labels starting or stopping; a shadow set appearing or
going). On any error the running policy sets stay, the error is logged, and a ``policy/reload``
record says it was refused and why. A reload that is applied puts the new set in force in place
(``PolicyEngine.adopt``: every stage and filter holding the engine decides with it from its next
call on) and at once writes a durable ``policy/reload`` record carrying the new set's version; the
log commits in order, so that record precedes any decision of the new set. When it cannot be
written, the old sets are adopted back (no record, no change: fail closed). A call decided before
keeps the version it was decided with in its record (``notes["policy_version"]``), and an approval
bound to the old version no longer matches.

Sources: docs/architecture.md, "Hot reload"; issue 17, "Configuration changes without restart".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion import audit
from bastion.audit.build import decision_body
from bastion.config import BastionConfig
from bastion.errors import BastionError, ConfigError, clip
from bastion.ids import new_id
from bastion.policy.engine import PolicyEngine

__all__ = ["PolicyReloader", "ReloadResult", "ReloadTrigger"]

logger = logging.getLogger(__name__)

ReloadTrigger = str
"""What asked for a reload: ``"sighup"``, ``"file change"``, ``"replica <id>"``, ``"api"`` (recorded)."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """``applied``: the new sets are in force; ``version``: the enforced set's version after the
    attempt; ``previous``: before it; ``error``: why it was refused (``None`` when applied or when
    nothing changed); ``changed``: whether the version moved."""

    applied: bool
    version: str
    previous: str
    error: str | None = None

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

    ``running`` is the configuration the gateway started with (its ``policy`` section is replaced
    by each applied reload); ``limits_placed``: whether the request path has a limits stage;
    ``tracks_labels(engine, shadow)``: whether those sets, with the running routes, need data-flow
    labels kept (``Gateway._tracks_labels``). Reloads run one at a time.
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
        tracks_labels: Callable[[PolicyEngine, PolicyEngine | None], bool],
        load: Callable[[Path], BastionConfig] | None = None,
    ) -> None:
        from bastion.config import load_config

        self.path = path
        self.running = running
        self._engine = engine
        self._shadow = shadow
        self._log = log
        self._limits_placed = limits_placed
        self._tracks_labels = tracks_labels
        self._labels = tracks_labels(engine, shadow)
        self._load = load or load_config
        self._lock = asyncio.Lock()

    @property
    def watched_files(self) -> tuple[Path, ...]:
        """The files whose change asks for a reload (``policy.watch``): the configuration, the policy
        files and directories, the schema."""
        policy = self.running.policy
        extra = (policy.schema_file,) if policy.schema_file is not None else ()
        return (self.path, *policy.files, *policy.shadow_files, *extra)

    async def reload(self, trigger: ReloadTrigger) -> ReloadResult:
        """Validate the configuration at ``path`` and apply its policy sets (module docstring). Never
        raises (except ``CancelledError``): a refusal is the result's ``error``, logged and recorded
        when the log accepts the record."""
        async with self._lock:
            previous = self._engine.version
            try:
                candidate = await asyncio.to_thread(self._validated)
            except Exception as exc:  # noqa: BLE001 - any failure refuses the reload; the running sets stay
                error = exc.message if isinstance(exc, BastionError) else f"{type(exc).__name__}: {exc}"
                logger.error("policy reload (%s) refused; the running policies stay: %s", trigger, error)
                await self._record(trigger, previous, previous, error)
                return ReloadResult(False, previous, previous, error)
            version = candidate.engine.version
            shadow_version = candidate.shadow.version if candidate.shadow is not None else None
            unchanged = shadow_version == (self._shadow.version if self._shadow is not None else None)
            if version == previous and unchanged:
                logger.info("policy reload (%s): the policy sets did not change (%s)", trigger, version[:12])
                return ReloadResult(False, previous, previous)
            # In force first, then recorded: the record is queued before any decision of the new set,
            # and the log commits in order. No durable record, no change: the old sets come back.
            pairs = [(self._engine, candidate.engine)]
            if self._shadow is not None and candidate.shadow is not None:
                pairs.append((self._shadow, candidate.shadow))
            before = [(running, running.snapshot()) for running, _ in pairs]
            for running, new in pairs:
                running.adopt(new)
            try:
                await self._record(trigger, version, previous, None, strict=True)
            except Exception as exc:  # noqa: BLE001 - no durable record of the change, no change
                for running, old in before:
                    running.adopt(old)
                logger.error("policy reload (%s) not applied: its audit record failed: %s", trigger, exc)
                return ReloadResult(False, previous, previous, f"the audit record failed: {exc}")
            self.running = candidate.config
            logger.warning("policy reload (%s): policy set %s is in force (was %s)", trigger, version[:12],
                           previous[:12])  # fmt: skip
            return ReloadResult(True, version, previous)

    def _validated(self) -> _Candidate:
        """The new configuration and its engines, or ``ConfigError`` saying why they cannot replace the
        running ones (on a worker thread: Cedar's validation of a large set takes a while)."""
        config = self._load(self.path)
        changed = _changed_sections(self.running, config)
        if changed:
            raise ConfigError(f"only the policy section reloads; restart to apply the change to {', '.join(changed)}")
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
        if self._tracks_labels(engine, shadow) != self._labels:
            raise ConfigError("the new policies start or stop reading context.session_labels: restart to apply")
        return _Candidate(config, engine, shadow)

    async def _record(
        self, trigger: ReloadTrigger, version: str, previous: str, error: str | None, *, strict: bool = False
    ) -> None:
        """Commit the ``policy/reload`` record (``strict``: raise when it cannot be written; else log)."""
        body = decision_body(
            route="-",
            method="policy/reload",
            effect="deny" if error else "allow",
            policy_ids=(),
            obligations={},
            reason="reload_refused" if error else None,
            policy_version=version,
            arguments={"trigger": trigger, "previous_version": previous, **_error(error)},
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


def _changed_sections(running: BastionConfig, new: BastionConfig) -> list[str]:
    """The top-level configuration keys other than ``policy`` whose values differ."""
    old_dump = running.model_dump(exclude={"policy"})
    new_dump = new.model_dump(exclude={"policy"})
    return sorted(key for key in old_dump.keys() | new_dump.keys() if old_dump.get(key) != new_dump.get(key))


def _error(error: str | None) -> dict[str, str]:
    """The record's ``error`` argument: the refusal's text, clipped (none when applied)."""
    return {"error": clip(error, 1000)} if error else {}
