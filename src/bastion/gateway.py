"""The composition root: builds every component from a validated configuration.

``Gateway(config)`` loads (and fails fast on) everything that can be checked
before serving: signing keys, the policy set, secret references. ``start()``
opens the audit log and starts the stdio upstreams; ``stop()`` stops them and
flushes the audit log. ``app`` is the ASGI application to serve.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from bastion.approvals.desk import ApprovalDesk
from bastion.approvals.notices import DecisionNotices
from bastion.approvals.state import RequestStateSealer
from bastion.approvals.webhook import WebhookAttempt, WebhookNotifier
from bastion.audit.checkpoints import CheckpointKeys, CheckpointWriter
from bastion.audit.export import finish as finish_exports
from bastion.audit.export_setup import build_exporters
from bastion.audit.replicas import ReplicaRegistry, replica_name
from bastion.catalog import MemoryCatalogStore
from bastion.catalog.guard import DefinitionGuard
from bastion.config import BastionConfig, RouteSettings
from bastion.config.limits import SessionCaps
from bastion.credentials.broker import CredentialSource, ExchangedTokens, UserTokens
from bastion.credentials.exchange import TokenExchange
from bastion.credentials.upstream_oauth import UpstreamOAuthClient
from bastion.credentials.vault import TokenVault, VaultKeys
from bastion.egress import AllowList, EgressGuard, audit_refusals
from bastion.errors import ConfigError
from bastion.identity import SigningKeys, TokenIssuer, TokenVerifier
from bastion.identity.external import guarded_jwks_fetch
from bastion.limits.activity import SessionActivity
from bastion.limits.rates import MAX_WINDOW_S
from bastion.metrics import GatewayMetrics
from bastion.metrics.gateway_metrics import check_metrics_path
from bastion.oauth import AuthorizationServer
from bastion.pipeline.observer import NO_OBSERVER, StepObserver, combined
from bastion.pipeline.plan import assemble
from bastion.pipeline.stages.approve import ApproveStage
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.authenticate import AuthenticateStage
from bastion.pipeline.stages.authorize import AuthorizeStage
from bastion.pipeline.stages.base import Stage
from bastion.pipeline.stages.classify import ClassifyStage
from bastion.pipeline.stages.continuation import ContinuationFilter, ContinuationStage
from bastion.pipeline.stages.definitions import DefinitionStage
from bastion.pipeline.stages.forward_http import HttpEndStage, HttpForwardStage, HttpStreamStage
from bastion.pipeline.stages.forward_stdio import StdioEndStage, StdioForwardStage, StdioStreamStage
from bastion.pipeline.stages.inspect import ListFilter
from bastion.pipeline.stages.limits import LimitsStage
from bastion.pipeline.stages.list_changed import ListChangedFilter
from bastion.pipeline.stages.redact import RedactFilter
from bastion.pipeline.stages.scan import DefinitionFilter
from bastion.pipeline.stages.server_requests import ServerRequestFilter
from bastion.pipeline.stages.session import SessionStage
from bastion.pipeline.stages.transport import StreamTransportStage, TransportStage
from bastion.pipeline.stages.url_arguments import UrlArgumentStage
from bastion.pipeline.stages.validate import ValidateStage
from bastion.pipeline.stages.volume import VolumeFilter
from bastion.policy import PolicyEngine
from bastion.policy.reload_triggers import ReplicaReloads, reload_and_tell, watch_files
from bastion.policy.reloading import PolicyReloader, ReloadResult
from bastion.portal import PORTAL_PATHS, Portal
from bastion.portal.approvals import ApprovalPages
from bastion.portal.definitions import DefinitionPages
from bastion.principal import Principal
from bastion.scan.definitions import scan_definition
from bastion.stores.backends import (
    DATABASE_FILE,
    activity_store,
    approval_store,
    audit_log,
    audit_reader,
    authorization_store,
    continuation_store,
    pin_store,
    postgres_database,
    revocation_store,
    session_store,
    vault_store,
    volume_store,
)
from bastion.stores.counters import RateCounter
from bastion.stores.memory_counters import MemoryRateCounter
from bastion.stores.redis_counters import RedisRateCounter
from bastion.stores.sessions import Session
from bastion.stores.sqlite_counters import SQLiteRateCounter
from bastion.tracing import Tracing
from bastion.transport.app import GatewayApp, build_app
from bastion.transport.checks import OriginPolicy
from bastion.transport.drain import Drain
from bastion.transport.endpoint import McpEndpoint
from bastion.transport.route_swap import RouteSwap, ServedRoute
from bastion.transport.routes import RouteRuntime
from bastion.upstream.configured import http_upstream, stdio_upstream
from bastion.volume import BaselineKeeper

__all__ = ["DATABASE_FILE", "Gateway"]

_LONGEST_QUOTA_S = MAX_WINDOW_S
"""Quota hits older than the longest window a rate may have are swept (``bastion.limits.rates``)."""

logger = logging.getLogger(__name__)

_SWEEP_INTERVAL_S = 60.0
_END_SESSIONS_TIMEOUT_S = 5.0
_CHECKPOINT_POLL_S = 1.0
"""How often the gateway asks whether an audit checkpoint is due."""
_EXPORT_FINISH_S = 5.0
"""How long, at stop, each audit exporter may take to send the records still pending."""
_READY_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for each shared store to answer."""
_GC_THRESHOLDS = (20_000, 10, 10)
# The cyclic collector's generation thresholds once started (CPython's default: 700, 10, 10). Every
# request allocates a few hundred container objects, and at concurrency 16 a young collection every
# 700 allocations finds the in-flight requests' objects alive and promotes them, so the older
# generations fill and are collected over and over: 10% of the CPU per call under load in the py-spy
# profile of `make bench` (c=16), 0.5% with these. Reference counting still frees almost everything
# at once; only cyclic garbage waits longer (at most about 20,000 allocations for the youngest).


class Gateway:
    """Bastion, assembled. Raises ``ConfigError`` when a component cannot be built."""

    def __init__(self, config: BastionConfig) -> None:
        self.config = config
        self.drain = Drain(config.server.drain_s)  # the graceful stop (bastion.transport.drain)
        self.closing = self.drain.closing
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.database = data_dir / DATABASE_FILE
        identity = config.identity
        self.keys = SigningKeys.load_or_create(data_dir, verify_window_s=identity.max_token_ttl,
                                               file=identity.signing_keys_file)  # fmt: skip
        # The shared PostgreSQL database of stores.postgres (None: every store embedded).
        self.postgres = postgres_database(config)
        self.revocations = revocation_store(config, self.postgres, recheck_s=0.05)
        self.issuer = TokenIssuer(self.keys, config.issuer, identity.max_token_ttl)
        self.replica = replica_name()  # this process, in the shared log's rows and gateway_replicas
        self.audit = audit_log(config, self.postgres, replica=self.replica)
        # With the shared log: this replica's heartbeat, and outcomes for the calls of a lost one
        self.replicas = (
            ReplicaRegistry(self.postgres, self.audit, self.replica, lost_after_s=config.stores.postgres.replica_lost_s)
            if self.postgres is not None and config.stores.postgres is not None else None
        )  # fmt: skip
        checkpoints = config.audit.checkpoints
        self.checkpoints = (  # signed checkpoints of the audit chain (None: off)
            CheckpointWriter(CheckpointKeys.load_or_create(data_dir), checkpoints.path(data_dir),
                             every_records=checkpoints.every_records, every_s=checkpoints.every_s)
            if checkpoints.enabled else None
        )  # fmt: skip
        # audit.export: each follows the log on its own (with stores.postgres one replica at a time)
        self.exporters = build_exporters(config, self.database, self.postgres)
        # Built before whatever connects out (JWKS, upstreams): every refusal gets an audit record.
        self.egress = EgressGuard(
            allow=AllowList.parse(config.egress.allow),
            ca_file=config.egress.ca_file,
            on_refusal=audit_refusals(self.audit),
        )
        self.verifier = TokenVerifier(
            issuer=config.issuer,
            keys=self.keys,
            revocations=self.revocations,
            external_issuers=identity.external_issuers,
            leeway_s=identity.leeway_s,
            jwks_fetch=guarded_jwks_fetch(self.egress),
        )
        self.engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
        self.metrics = GatewayMetrics.build(config, self.engine)  # None: metrics.enabled is false
        self.tracing = Tracing.build(config.tracing)  # None: tracing.enabled is false
        self.shadow_engine = (  # evaluated beside, never enforced (policy.shadow_files)
            PolicyEngine.load(config.policy.shadow_files, config.policy.schema_file)
            if config.policy.shadow_files
            else None
        )
        self.rates = MemoryRateCounter()  # the sign-in throttle's counts
        self.limit_rates, self.limit_quotas = self._counters()  # the limits stage's (issue 14)
        self._activity_store = activity_store(config)  # Redis with stores.redis: shared by every replica
        self.activity = SessionActivity(  # session caps and data-flow labels (issue 14)
            self._activity_store,
            caps=_caps(config),
            data_flow=config.data_flow,
            track_labels=self._tracks_labels(),
            session_idle_s=config.server.session_idle_s,
        )
        self.sessions = session_store(config, self._end_upstream_later)
        # the limits stage is placed (a reload cannot add it: bastion.policy.reloading)
        self._limits_placed = bool(config.limits or self.engine.limited_policy_ids or self.activity.active)
        self.reloader: PolicyReloader | None = None  # hot reload of the policies (enable_reload)
        self.replica_reloads: ReplicaReloads | None = None
        self.continuations = continuation_store(config)  # requestState and task ids issued to each principal
        self.volume = BaselineKeeper(volume_store(config, self.postgres), config.volume)  # result volume baselines
        self.webhook: WebhookNotifier | None = None
        self.approvals = self._approval_desk()
        if self.metrics is not None:  # decision times, pending requests, audit transactions, sessions open
            self.metrics.watch(approvals=self.approvals, audit=self.audit, sessions=self.sessions)
        self.approval_states = RequestStateSealer.load_or_create(data_dir)  # confirmations on 2026-07-28
        self._background: set[asyncio.Task[None]] = set()
        self._ready = False  # set once start() finished, cleared when stop() begins
        self.origins = OriginPolicy.for_listener(
            config.server.base_url,
            config.server.port,
            config.server.allowed_hosts,
            config.server.browser_origins,  # server.allowed_origins and server.cors.allowed_origins
        )
        self.pins = pin_store(config, self.postgres)  # pinned definitions (issue 15)
        self.vault = self._vault()
        # The routes serving; a reload of the routes changes these lists and maps in place (install_routes).
        self.served: list[ServedRoute] = []
        self.routes: list[RouteRuntime] = []
        self.endpoints: list[McpEndpoint] = []
        self.guards: dict[str, DefinitionGuard] = {}
        self._by_name: dict[str, RouteRuntime] = {}
        self._place_routes([self.serve_route(settings) for settings in config.routes])
        self.route_swap: RouteSwap | None = None  # a reload's routes (enable_reload)
        self.authorization: AuthorizationServer | None = None
        if identity.authorization_server.enabled:
            self.authorization = AuthorizationServer(
                config,
                store=authorization_store(config, self.postgres),  # in stores.postgres when set
                audit=self.audit,
                issuer=self.issuer,
                revocations=self.revocations,
                rates=self.rates,
                fetch=functools.partial(self.egress.fetch, purpose="client_metadata"),
                egress=self.egress,
            )
        self.portal: Portal | None = None
        if self.authorization is not None:
            self.portal = Portal(
                base_url=config.server.base_url,
                issuer=config.issuer,
                store=self.authorization.store,
                routes=self.routes,
                engine=self.engine,
                verifier=self.verifier,
                audit=self.authorization.context.audit,
                vault=self.vault,
                audit_reader=audit_reader(config, self.postgres),
                guards=self.guards,
            )
        self.app: GatewayApp = build_app(
            self.endpoints,
            authorization_server=config.issuer,
            jwks=self._jwks,
            health=self.health,
            readiness=self.readiness,
            lifespan=self._lifespan,
            extra_routes=[
                *((self.metrics.route,) if self.metrics else ()),  # before the portal's: never behind its sign-in
                *(self.authorization.routes() if self.authorization else ()),
                *(self.portal.routes() if self.portal else ()),
                *(ApprovalPages(self.portal, self.approvals).routes() if self.portal else ()),
                *(DefinitionPages(self.portal, self.guards, self.pins, self.engine).routes() if self.portal else ()),
            ],
            cors=config.server.cors,
        )

    def _counters(self) -> tuple[RateCounter, RateCounter]:
        """``(rates, quotas)``: both in the configured Redis (shared by every process using it),
        else rates in memory and quotas in the data directory's file. Raises ``ConfigError`` when
        the Redis password reference cannot be resolved."""
        settings = self.config.counters
        url = settings.resolved_url()
        if url is not None:
            shared = RedisRateCounter(url, prefix=settings.prefix)
            return shared, shared
        return MemoryRateCounter(max_keys=1_000_000), SQLiteRateCounter(self.database)

    def _tracks_labels(self) -> bool:
        """Whether data-flow labels are kept: some tool has labels and a policy (enforced or shadow)
        reads ``context.session_labels``."""
        return self._tracks_labels_of(self.engine, self.shadow_engine, self.config.routes)

    @staticmethod
    def _tracks_labels_of(engine: PolicyEngine, shadow: PolicyEngine | None, routes: Sequence[RouteSettings]) -> bool:
        """``_tracks_labels`` for the policy sets ``engine`` and ``shadow`` and the ``routes`` (a reload's
        candidates too)."""
        labelled = any(tool.labels for route in routes for tool in route.tools.values())
        engines = [engine] if shadow is None else [engine, shadow]
        return labelled and any(each.reads_context("session_labels") for each in engines)

    def enable_reload(self, path: Path, file_config: BastionConfig) -> PolicyReloader:
        """Let the policy sets and the routes be reloaded from the configuration file at ``path`` without
        a restart (``bastion.policy.reloading``, ``bastion.transport.route_swap``): ``reload_policies``
        (SIGHUP), the files' changes with ``policy.watch``, and the other replicas' reloads with
        ``stores.redis``. ``file_config`` is that file's configuration before any command-line
        override (``--port``). Call before ``start``."""
        self.route_swap = RouteSwap(self, drain_s=self.config.server.drain_s)
        self.reloader = PolicyReloader(
            path, file_config, self.engine, self.shadow_engine, log=self.audit,
            limits_placed=self._limits_placed, tracks_labels=self._tracks_labels_of, routes=self.route_swap,
        )  # fmt: skip
        redis = self.config.stores.redis
        if redis is not None:
            self.replica_reloads = ReplicaReloads(redis.resolved_url(), redis.prefix, self.reloader)
        return self.reloader

    async def reload_policies(self, trigger: str) -> ReloadResult | None:
        """Reload the policy sets and the routes now (``None`` when ``enable_reload`` was not called);
        never raises."""
        if self.reloader is None:
            return None
        return await reload_and_tell(self.reloader, trigger, self.replica_reloads)

    def _approval_desk(self) -> ApprovalDesk:
        """The approval desk on the configured store, announcing new requests to ``approvals.webhook``
        and, with ``stores.redis``, its decisions to the other replicas. Raises ``ConfigError`` when
        the webhook secret cannot be resolved."""
        settings = self.config.approvals
        base = self.config.server.base_url

        def status_url(approval_id: str) -> str:
            return base + PORTAL_PATHS["approval"].format(approval_id=approval_id)

        desk = ApprovalDesk(
            store=approval_store(self.config, self.postgres), log=self.audit, engine=self.engine, ttl=settings.ttl,
            status_url=status_url, closing=self.closing, poll_s=settings.poll, notices=self._decision_notices(),
        )  # fmt: skip
        hook = settings.webhook
        if hook is not None:

            async def record(attempt: WebhookAttempt) -> None:
                request = await desk.store.get(attempt.approval_id)
                if request is not None:
                    detail = f"HTTP {attempt.status}" if attempt.delivered else attempt.error or "failed"
                    await desk.record_notified(request, delivered=attempt.delivered, attempt=attempt.attempt,
                                               detail=detail)  # fmt: skip

            notifier = WebhookNotifier(
                guard=self.egress, url=hook.url, secret=hook.secret.resolve().encode(),
                allow=AllowList.parse(hook.allow), attempts=hook.attempts, on_attempt=record,
            )  # fmt: skip
            self.webhook = notifier
            desk.notify = lambda request: notifier.notify(request, status_url(request.id), "Bastion approval")
        return desk

    def _decision_notices(self) -> DecisionNotices | None:
        """The replicas' "approval decided" channel on ``stores.redis`` (``None`` without it)."""
        redis = self.config.stores.redis
        return DecisionNotices(redis.resolved_url(), redis.prefix) if redis is not None else None

    def _vault(self) -> TokenVault | None:
        """The token vault, when a route keeps per-user upstream tokens. Raises ``ConfigError``
        when the vault key cannot be resolved or is not 32 bytes."""
        if not _keeps_user_tokens(self.config.routes):
            return None
        keys = VaultKeys.from_settings(self.config.credentials)
        return TokenVault(vault_store(self.config, self.postgres), keys)  # in stores.postgres when set

    def _credentials(self, settings: RouteSettings) -> CredentialSource | None:
        """Where the route's upstream credential comes from (docs/architecture.md, "Credentials")."""
        credentials, http = settings.credentials, settings.http
        if credentials is None or http is None:
            return None
        base = self.config.server.base_url
        if credentials.oauth is not None and self.vault is not None:
            client = UpstreamOAuthClient(
                settings.name,
                credentials.oauth,
                upstream_url=http.url,
                egress=self.egress,
                vault=self.vault,
                redirect_uri=base + PORTAL_PATHS["callback"],
                metadata_document_url=base + PORTAL_PATHS["client_metadata"] if base.startswith("https://") else None,
                upstream_allow=AllowList.parse(http.allow),
                upstream_http=http.allow_http,
            )
            connect = base + PORTAL_PATHS["connect"].format(route=settings.name)
            return UserTokens(client, self.vault, connect_url=connect, title=settings.title or settings.name)
        exchange = credentials.token_exchange
        if exchange is None:
            return None
        secret = exchange.client_secret.resolve() if exchange.client_secret is not None else None
        audience = exchange.subject_token_audience or exchange.token_endpoint

        def subject_token(principal: Principal) -> str:
            return self.issuer.mint(
                sub=principal.sub, audience=audience, ttl_s=exchange.subject_token_ttl_s, email=principal.email,
                name=principal.name, groups=principal.groups, client_id="bastion-token-exchange",
                kind=principal.kind, idp=principal.idp,
            ).token  # fmt: skip

        send = functools.partial(self.egress.send, allow=AllowList.parse(exchange.allow), purpose="token_exchange")
        tokens = TokenExchange(
            exchange, route_name=settings.name, send=send, subject_token=subject_token, client_secret=secret
        )
        return ExchangedTokens(tokens)

    def serve_route(self, settings: RouteSettings, *, opened_after: float | None = None) -> ServedRoute:
        """The route of ``settings`` built to serve (upstream, definition guard, credential source,
        catalogs, endpoint), not yet started: at start and for a reload alike. ``opened_after``
        (epoch s): the sessions opened before are ended (a route a reload changed). Raises
        ``ConfigError`` for a secret that does not resolve."""
        runtime = self._route(settings)
        guard = self._guard(runtime)
        runtime.credentials = self._credentials(settings)
        # A caller's own upstream credential may show each person other tools: one catalog each.
        runtime.catalogs = MemoryCatalogStore(per_user=runtime.credentials is not None)
        drain = self.drain.branch()  # retiring the route drains its endpoint alone
        endpoint = self._endpoint(runtime, guard, drain, opened_after)
        return ServedRoute(runtime, guard, endpoint, drain)

    async def start_routes(self, routes: Sequence[ServedRoute], *, strict: bool) -> None:
        """Load each route's pins and start its stdio upstream (waiting for the handshakes). Not
        ``strict`` (at start), an upstream that does not start is logged and keeps restarting;
        ``strict`` (a reload), its failure is raised (``UpstreamUnavailable``) at once."""
        for served in routes:
            await served.guard.load()  # the route's pins, baselines and blocking definitions
        servers = [served.runtime.stdio for served in routes if served.runtime.stdio is not None]
        results = await asyncio.gather(*(s.start(strict=strict) for s in servers), return_exceptions=True)
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, BaseException):
                if strict:
                    raise result
                logger.error("stdio upstream %s is not ready: %s (it keeps restarting)", server.name, result)

    async def stop_routes(self, routes: Sequence[ServedRoute]) -> None:
        """Stop the routes' upstreams (stdio processes, HTTP connections); never raises."""
        results = await asyncio.gather(
            *(r.runtime.stdio.stop() for r in routes if r.runtime.stdio is not None),
            *(r.runtime.http.aclose() for r in routes if r.runtime.http is not None),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("stopping a route's upstream failed: %s", result)
        for served in routes:
            self.drain.prune(served.drain)

    def check_routes(self, config: BastionConfig) -> None:
        """Raise ``ConfigError`` when ``config``'s routes need what this gateway did not build at start
        (a restart): a token vault, a limits stage for session caps, or the metrics path."""
        if self.vault is None and _keeps_user_tokens(config.routes):
            raise ConfigError("a route gains per-user upstream tokens and no token vault runs: restart to apply")
        if not self._limits_placed and any(caps.active for caps in _caps(config).values()):
            raise ConfigError("a route gains session caps and the running gateway counts no limits: restart to apply")
        if self.metrics is not None:
            check_metrics_path(config)

    def install_routes(self, config: BastionConfig, serve: Sequence[ServedRoute], withdraw: Sequence[str]) -> None:
        """Serve ``serve`` (replacing the routes of their names) and stop serving the routes named
        ``withdraw`` (a new request there is answered as for an unknown path); ``config``'s policy and
        routes are the gateway's after (a reload: ``bastion.transport.route_swap``)."""
        current = {served.name: served for served in self.served}
        for name in (*withdraw, *(served.name for served in serve)):
            old = current.pop(name, None)
            if old is not None:
                self.app.withdraw(old.runtime.path)
        for served in serve:
            current[served.name] = served
            self.app.serve(served.endpoint)
        self.config = self.config.model_copy(update={"routes": config.routes, "policy": config.policy})
        self._place_routes([current[settings.name] for settings in self.config.routes])
        self.activity.use_caps(_caps(self.config))
        if self.metrics is not None:
            self.metrics.routes_changed(self.config)

    def _place_routes(self, served: list[ServedRoute]) -> None:
        """Hold ``served`` as the routes serving, in the lists and maps the portal, the health checks
        and the session ends read (changed in place: they hold them)."""
        self.served[:] = served
        self.routes[:] = [each.runtime for each in served]
        self.endpoints[:] = [each.endpoint for each in served]
        self._by_name.clear()
        self._by_name.update((each.name, each.runtime) for each in served)
        self.guards.clear()
        self.guards.update((each.name, each.guard) for each in served)

    def _route(self, settings: RouteSettings) -> RouteRuntime:
        base = self.config.server.base_url
        runtime = RouteRuntime(
            settings=settings,
            resource_uri=self.config.resource_uri(settings),
            metadata_url=f"{base}/.well-known/oauth-protected-resource{settings.public_path}",
        )
        server = self.config.identity.authorization_server
        if server.enabled:
            runtime.scopes, runtime.scopes_supported = server.default_scopes, server.scopes
        if settings.http is not None:
            runtime.http = http_upstream(settings, self.egress)
        elif settings.stdio is not None:
            runtime.stdio = stdio_upstream(settings)
            runtime.stdio.on_list_changed = lambda _: runtime.catalogs.mark_stale()
        return runtime

    def _guard(self, route: RouteRuntime) -> DefinitionGuard:
        """The route's definition guard (pins, quarantine, the scanner's verdicts), on the pin store;
        the scanner's shadowing rule sees the other routes' tools."""

        def others() -> frozenset[str]:
            return frozenset(n for name, guard in self.guards.items() if name != route.name for n in guard.tool_names())

        return DefinitionGuard(route.name, route.settings.definitions, store=self.pins, log=self.audit,
                               scanner=scan_definition, others=others)  # fmt: skip

    def _endpoint(
        self, route: RouteRuntime, guard: DefinitionGuard, drain: Drain, opened_after: float | None
    ) -> McpEndpoint:
        """The route's MCP endpoint: its components placed in the slots ``bastion.pipeline.plan`` orders;
        ``opened_after`` as for ``SessionStage``."""
        forward: HttpForwardStage | StdioForwardStage
        if route.http is not None:
            forward = HttpForwardStage(self.sessions)
            forwards: dict[str, Stage] = {
                "POST": forward, "GET": HttpStreamStage(), "DELETE": HttpEndStage(self.sessions)
            }  # fmt: skip
        else:
            forward = StdioForwardStage(self.sessions)
            forwards = {"POST": forward, "GET": StdioStreamStage(), "DELETE": StdioEndStage(self.sessions)}
        authenticate = AuthenticateStage(
            self.verifier,
            {item.issuer: frozenset(item.routes) for item in self.config.identity.external_issuers},
        )
        session = SessionStage(self.sessions, opened_after=opened_after)
        authorize = AuthorizeStage(self.engine, self.shadow_engine, self.activity)
        checks: dict[str, Stage] = {
            "transport": TransportStage(self.origins, self.config.server.argument_limits),
            "authenticate": authenticate,
            "session": session,
            "classify": ClassifyStage(forward.load_catalog),
            "continuation": ContinuationStage(self.continuations),
            "definitions": DefinitionStage(guard),
            "validate": ValidateStage(strict_arguments=route.settings.strict_arguments),
            "authorize": authorize,
        }
        if route.settings.url_arguments is not None:
            checks["url_arguments"] = UrlArgumentStage(self.egress, route.settings.url_arguments)
        if self._limits_placed:
            checks["limits"] = LimitsStage(
                self.config.limits, engine=self.engine, rates=self.limit_rates, quotas=self.limit_quotas,
                activity=self.activity,
            )  # fmt: skip
        checks["approve"] = ApproveStage(
            self.approvals, states=self.approval_states, hold_s=self.config.approvals.hold,
            policy_version=self.engine.version,
            store_arguments=self.config.audit.store_arguments,
        )  # fmt: skip
        audit = AuditStage(
            self.audit, policy_version=self.engine.version, store_arguments=self.config.audit.store_arguments
        )
        pipelines = assemble(
            checks=checks,
            stream_checks={
                "transport": StreamTransportStage(self.origins),
                "authenticate": authenticate,
                "session": session,
                "definitions": checks["definitions"],  # a blocked route opens no event stream
                "authorize": authorize,
            },
            forward=forwards,
            filters={
                "list": ListFilter(self.engine),
                "list_changed": ListChangedFilter(),
                "server_requests": ServerRequestFilter(self.engine, audit, forward.answer, self.activity),
                "continuation": ContinuationFilter(self.continuations),
                "volume": VolumeFilter(self.volume.baselines, route.settings),
                "scan": DefinitionFilter(guard),
                "redact": RedactFilter(route.settings.results),
            },
            audit=audit,
            observer=self._observer(),
            after=[self.activity.returned] if self.activity.capped(route.name) else (),
        )
        return McpEndpoint(route, pipelines, max_body=self.config.server.max_body_bytes, drain=drain)

    def _observer(self) -> StepObserver:
        """What watches every step of the request path: the metrics and the traces, as configured."""
        metrics = self.metrics.observer if self.metrics is not None else NO_OBSERVER
        return combined(metrics, self.tracing.observer if self.tracing is not None else NO_OBSERVER)

    def _jwks(self) -> dict[str, Any]:
        """The published key set, re-read first in case ``bastion token rotate-keys`` changed it."""
        self.keys.refresh()
        return self.keys.jwks()

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "pid": n, "routes": {name: {"upstream": kind, "ready": bool[, "streams": n]}}}``;
        ``pid`` tells the workers of ``bastion serve --workers N`` apart.

        ``streams`` (stdio routes) counts the open event streams of that route's sessions.
        """
        routes: dict[str, Any] = {}
        for route in self.routes:
            if route.stdio is not None:
                routes[route.name] = {
                    "upstream": "stdio",
                    "ready": route.stdio.pid is not None,
                    "streams": route.stdio.listeners,
                }
            else:
                routes[route.name] = {"upstream": "http", "ready": True}
        return {"status": "ok", "pid": os.getpid(), "routes": routes}

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether this replica can serve calls now (``/readyz``), and each check's answer (``"ok"`` or
        why not): the gateway started and not stopping, every stdio upstream running, the audit log
        accepting records, the revocation list current, and each shared store answering within
        ``_READY_TIMEOUT_S`` (PostgreSQL, the sessions' Redis)."""
        ready = self._ready and not self.closing.is_set()
        checks: dict[str, str] = {"started": "ok" if ready else "not started, or stopping"}
        for route in self.routes:
            if route.stdio is not None:
                checks[f"upstream {route.name}"] = "ok" if route.stdio.pid is not None else "stdio upstream not running"
        checks["audit log"] = "ok" if self.audit.running else "not accepting records"
        try:
            self.revocations.is_revoked("")
            checks["revocations"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is an answer here
            checks["revocations"] = f"{type(exc).__name__}: {exc}"
        probes: dict[str, Callable[[], Awaitable[object]]] = {}
        if self.postgres is not None:
            probes["postgres"] = functools.partial(self.postgres.pool.fetchval, "SELECT 1")
        ping = getattr(self.sessions, "ping", None)
        if ping is not None:
            probes["sessions (redis)"] = ping
        for name, probe in probes.items():
            try:
                await asyncio.wait_for(probe(), _READY_TIMEOUT_S)
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is an answer here
                checks[name] = f"{type(exc).__name__}: {exc}"
        return all(answer == "ok" for answer in checks.values()), checks

    async def _write_checkpoints(self) -> None:
        """Every second, a signed checkpoint of the audit chain if one is due (``CheckpointWriter``).
        A failure is logged and tried again; never raises (except ``CancelledError``)."""
        writer = self.checkpoints
        while writer is not None:
            await asyncio.sleep(_CHECKPOINT_POLL_S)
            try:
                await writer.maybe_write(*await self.audit.head())
            except Exception as exc:  # noqa: BLE001 - retried on the next turn
                logger.warning("writing an audit checkpoint failed: %s", exc)

    def _end_upstream_later(self, session: Session) -> None:
        """``on_forget`` of the session store: end a dropped session's upstream session in the background."""
        task = asyncio.get_running_loop().create_task(self._end_upstream(session))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end_upstream(self, session: Session) -> None:
        """DELETE the upstream session behind ``session`` (HTTP routes; MCP basic/transports). Never raises.

        Routes with per-user credentials are left to expire the session themselves: the person's
        credential is not at hand when the session store drops an idle session.
        """
        route = self._by_name.get(session.route)
        if route is None or route.http is None or not session.upstream_id or route.credentials is not None:
            return
        try:
            response = await route.http.send("DELETE", headers={}, session_id=session.upstream_id)
            await response.aclose()
        except Exception as exc:  # noqa: BLE001 - best effort: the upstream expires it eventually
            logger.info("route %s: ending an upstream session failed: %s", route.name, exc)

    async def _sweep_sessions(self) -> None:
        """Every ``_SWEEP_INTERVAL_S`` seconds: one ``sweep`` at the wall-clock time."""
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            await self.sweep(time.time())

    async def sweep(self, now: float) -> None:
        """Housekeeping at ``now`` (epoch s): drop idle sessions (ending their upstream sessions),
        revocations of tokens expired before ``now``, the verifier's cached verifications of
        expired tokens, expired authorization state, unfinished vault connections, idle session
        activity (caps and data-flow labels), and quota hits
        older than any window (``_LONGEST_QUOTA_S``).
        It also saves the result volume baselines changed since the last sweep (written behind).

        Each step runs even when another failed; a failure is logged and retried next time.
        Never raises (except ``CancelledError``).
        """
        steps: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("sessions", functools.partial(self.sessions.sweep, now)),
            ("revocations", functools.partial(self.revocations.prune, now)),
            ("session activity", functools.partial(self.activity.sweep, now)),
        ]
        if self.authorization is not None:
            steps.append(("authorization state", functools.partial(self.authorization.purge, now)))
        if self.vault is not None:
            steps.append(("vault connections", functools.partial(self.vault.purge, now)))
        # quota hits older than the longest window any rule could use: no answer changes
        if isinstance(self.limit_quotas, SQLiteRateCounter):  # Redis expires its keys itself
            steps.append(("quota hits", functools.partial(self.limit_quotas.purge, now - _LONGEST_QUOTA_S)))
        steps.append(("volume baselines", self.volume.flush))  # written behind: the changed ones
        steps.append(("signing keys", self._refresh_keys))  # a rotated key file rolled out to every replica
        for what, step in steps:
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - housekeeping; retried on the next sweep
                logger.warning("sweeping expired %s failed: %s", what, exc)
        self.verifier.purge_expired(now)

    async def _refresh_keys(self) -> int:
        """Re-read the signing key file if it changed (``SigningKeys.refresh``); 1 when it did."""
        return int(self.keys.refresh())

    async def start(self) -> None:
        """Open the stores and start the stdio upstreams (waiting for their handshakes)."""
        await self.audit.start()
        if self.replicas is not None:
            await self.replicas.start()
        await self.revocations.start()
        for store in (self.sessions, self._activity_store, self.continuations):
            start_store = getattr(store, "start", None)  # Redis: its pool; memory: nothing to open
            if start_store is not None:
                await start_store()
        if self.authorization is not None:
            await self.authorization.start()
        if self.vault is not None:
            await self.vault.start()
        await self.approvals.start()
        await self.volume.start()  # loads the saved result volume baselines
        await self.pins.start()
        for counter in {id(c): c for c in (self.limit_rates, self.limit_quotas)}.values():
            start = getattr(counter, "start", None)
            if start is not None:
                await start()  # Redis: refuses to start when it does not answer (a clear error)
        sweeper = asyncio.get_running_loop().create_task(self._sweep_sessions())
        self._background.add(sweeper)
        if self.checkpoints is not None:
            self._background.add(asyncio.get_running_loop().create_task(self._write_checkpoints()))
        if self.reloader is not None and self.config.policy.watch:
            self._background.add(asyncio.get_running_loop().create_task(
                watch_files(self.reloader, self.replica_reloads)))  # fmt: skip
        if self.replica_reloads is not None:
            self._background.add(asyncio.get_running_loop().create_task(self.replica_reloads.listen()))
        for exporter in self.exporters:  # never raises; a destination that is down only waits
            self._background.add(asyncio.get_running_loop().create_task(exporter.run()))
        await self.start_routes(self.served, strict=False)
        gc.set_threshold(*_GC_THRESHOLDS)
        gc.freeze()  # what start-up built lives for the whole run: keep it out of every collection
        self._ready = True

    async def stop(self) -> None:
        """End upstream sessions, stop upstreams, close pools, flush and close the audit log."""
        self._ready = False
        for task in list(self._background):
            task.cancel()
        ending = [self._end_upstream(session) for session in await self.sessions.drain()]
        if ending:
            _, late = await asyncio.wait([asyncio.ensure_future(e) for e in ending], timeout=_END_SESSIONS_TIMEOUT_S)
            for task in late:
                task.cancel()
        if self.route_swap is not None:
            await self.route_swap.close()  # the routes a reload withdrew and still being retired
        await self.stop_routes(self.served)
        await self.verifier.aclose()
        if self.webhook is not None:  # before the egress guard its deliveries go through
            await self.webhook.aclose()
        await self.egress.aclose()
        if self.authorization is not None:
            await self.authorization.close()
        if self.vault is not None:
            await self.vault.close()
        await self.approvals.close()
        await self.pins.close()
        try:
            await self.volume.close()  # saves the baselines changed since the last sweep
        except Exception as exc:  # noqa: BLE001 - the rest still closes; the next run relearns
            logger.warning("saving the result volume baselines failed: %s", exc)
        for counter in {id(c): c for c in (self.limit_rates, self.limit_quotas)}.values():
            close = getattr(counter, "close", None)
            if close is not None:
                await close()
        await self.audit.close()
        if self.replicas is not None:  # after the flush: nothing of this replica's is left open
            await self.replicas.close()
        if self.tracing is not None:  # the spans still queued
            await self.tracing.shutdown()
        if self.checkpoints is not None:  # the last records too (an embedded log still knows its head)
            try:
                await self.checkpoints.maybe_write(*await self.audit.head(), force=True)
            except Exception as exc:  # noqa: BLE001 - the periodic ones stand; the next start adds more
                logger.info("no final audit checkpoint: %s", exc)
        await finish_exports(self.exporters, _EXPORT_FINISH_S)  # the last records; the rest at the next start
        await self.revocations.close()
        for store in (self.sessions, self._activity_store, self.continuations):
            close_store = getattr(store, "close", None)
            if close_store is not None:
                await close_store()

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def _caps(config: BastionConfig) -> dict[str, SessionCaps]:
    """The session caps of each route of ``config`` (``BastionConfig.caps_of``)."""
    return {route.name: config.caps_of(route) for route in config.routes}


def _keeps_user_tokens(routes: Sequence[RouteSettings]) -> bool:
    """Whether one of ``routes`` keeps per-user upstream tokens (which need the token vault)."""
    return any(route.credentials is not None and route.credentials.oauth is not None for route in routes)
