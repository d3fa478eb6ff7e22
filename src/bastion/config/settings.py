"""The configuration file's model: listener, identity, policy, audit and the routes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.approvals import ApprovalSettings
from bastion.config.base import _Model
from bastion.config.cors import CorsSettings
from bastion.config.credentials import VaultSettings
from bastion.config.export import ExportSettings, check_export_names
from bastion.config.limits import ArgumentLimits, CounterSettings, DataFlowSettings, LimitSettings, SessionCaps
from bastion.config.metrics import MetricsSettings
from bastion.config.oauth import AuthorizationServerSettings, EgressSettings
from bastion.config.routes import RouteSettings
from bastion.config.stores import StoreSettings, store_backends
from bastion.config.tracing import TracingSettings
from bastion.config.volume import VolumeSettings
from bastion.errors import ConfigError
from bastion.identity.durations import parse_duration
from bastion.identity.external import ExternalIssuer
from bastion.principal import RESERVED_IDPS

__all__ = ["AuditSettings", "BastionConfig", "IdentitySettings", "PolicySettings", "ServerSettings"]

Duration = Annotated[int, Field(ge=1)]


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
    return value


class ServerSettings(_Model):
    """Where Bastion listens and how it names itself.

    ``public_url`` is the origin clients use (resource URIs and metadata are
    built from it). ``allowed_origins``/``allowed_hosts`` guard against DNS
    rebinding (MCP basic/transports, security warning): they are added to
    ``public_url``'s origin and the loopback names of the listening port.
    ``cors`` says which browser origins may call the MCP endpoints
    cross-origin; those origins pass the Origin check too (``browser_origins``).

    Slow or hostile clients (``bastion.transport.connections``): a connection
    must send a request's headers, at most ``max_header_bytes`` of them, within
    ``header_timeout_s`` (else 408 or 431, closed), and the body within
    ``body_timeout_s`` of the headers (else 408 with a JSON-RPC error); at most
    ``max_connections`` connections are served at once (beyond them a request
    is answered 503 and its connection closed). Keep ``max_connections`` well
    under the process's descriptor limit (``ulimit -n``): each forwarded call
    may hold one more, to the upstream.

    ``drain_s``: on SIGTERM, calls in flight get this many seconds to finish before they are cut
    with a ``shutting_down`` error (``bastion.transport.drain``); give the process at least
    ``drain_s + 5`` seconds before a SIGKILL (Kubernetes ``terminationGracePeriodSeconds``).

    ``argument_limits`` bounds a call's ``arguments`` (depth, members, elements, string
    length, values in all; ``bastion.config.limits``): over any, the call is refused with
    JSON-RPC -32602 before the policy, the digest or redaction look at them.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    session_idle_s: Annotated[int, Field(ge=1)] = 3600
    header_timeout_s: Annotated[int, Field(ge=1, le=300)] = 10
    body_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 30
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    max_connections: int = Field(default=512, ge=1, le=1_000_000)
    drain_s: Annotated[int, Field(ge=0, le=3600)] = 25
    cors: CorsSettings = CorsSettings()
    argument_limits: ArgumentLimits = ArgumentLimits()

    _parse_idle = field_validator("session_idle_s", mode="before")(_duration)
    _parse_timeouts = field_validator("header_timeout_s", "body_timeout_s", mode="before")(_duration)

    @property
    def browser_origins(self) -> tuple[str, ...]:
        """The origins the Origin check admits besides Bastion's own: ``allowed_origins`` and
        ``cors.allowed_origins`` (an origin whose pages may read the endpoints' answers may also send
        them requests; ``"*"`` admits every origin, leaving the Host check)."""
        return (*self.allowed_origins, *self.cors.allowed_origins)

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, or ``http://host:port``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class IdentitySettings(_Model):
    """Token issuing and verification settings (RFC 9068 access tokens).

    ``signing_keys_file``: the ES256 signing key file, when it is managed outside the data directory
    so that every replica signs and verifies with the same keys (``stores.shared``): for example a
    Kubernetes Secret mounted read-only with mode 0400. The gateway never writes it and re-reads it
    when it changes (a rotation rolled out); ``bastion token rotate-keys`` creates or rotates it where
    it is writable. Default: ``<data_dir>/signing-keys.json``, created and rotated in place.
    """

    issuer: str | None = None
    signing_keys_file: Path | None = None
    max_token_ttl: Duration = 3600
    default_token_ttl: Duration = 900
    leeway_s: int = Field(default=30, ge=0, le=300)
    external_issuers: tuple[ExternalIssuer, ...] = ()
    authorization_server: AuthorizationServerSettings = AuthorizationServerSettings()

    _parse_ttls = field_validator("max_token_ttl", "default_token_ttl", mode="before")(_duration)

    @model_validator(mode="after")
    def _ttls(self) -> IdentitySettings:
        if self.default_token_ttl > self.max_token_ttl:
            raise ValueError("default_token_ttl exceeds max_token_ttl")
        if self.max_token_ttl > 24 * 3600:
            raise ValueError("max_token_ttl above 24h is refused: access tokens are short-lived")
        return self

    @model_validator(mode="after")
    def _distinct_idps(self) -> IdentitySettings:
        """Each ``principal.idp`` names one source: an external issuer's ``name`` is unique and is
        neither an identity provider's name nor one Bastion reserves (``local``, ``bastion``)."""
        taken = {p.name for p in self.authorization_server.identity_providers} | RESERVED_IDPS
        for index, external in enumerate(self.external_issuers):
            if external.name is not None and external.name in taken:
                raise ValueError(
                    f"external_issuers.{index}.name: {external.name!r} is already an identity provider's, "
                    "another external issuer's or a reserved name (local, bastion)"
                )
            taken.add(external.idp)
        return self


class PolicySettings(_Model):
    """Cedar policy files (or directories of ``.cedar`` files) and an optional schema.

    ``shadow_files``: a second policy set, evaluated beside the enforced one on every decision and
    never enforced; where it would have decided otherwise the decision record says so
    (``decision.shadow``), and ``bastion policy diff --since 1h`` sums that up. How a policy change
    is rolled out without breaking agents.

    ``bastion serve`` reloads the policy sets and the routes without a restart on SIGHUP and, with
    ``watch``, when the configuration file or a policy file changes (``bastion.policy.reloading``,
    ``bastion.transport.route_swap``): validated completely first, refused (the running sets and
    routes stay) on any error or on a change outside ``policy`` and ``routes``, and recorded either
    way as ``policy/reload``.
    """

    files: tuple[Path, ...] = Field(min_length=1)
    schema_file: Path | None = Field(default=None, alias="schema")
    shadow_files: tuple[Path, ...] = ()
    watch: bool = False


class CheckpointSettings(_Model):
    """``audit.checkpoints``: signed checkpoints of the chain (``bastion.audit.checkpoints``), on by
    default. One is appended to ``file`` (default ``<data_dir>/audit-checkpoints.jsonl``; ship it
    elsewhere as it grows) when ``every_records`` records were committed since the last, or
    ``every_s`` seconds passed with at least one new record."""

    enabled: bool = True
    every_records: int = Field(default=1000, ge=1)
    every_s: Annotated[int, Field(ge=1)] = 60
    file: Path | None = None

    _parse_every_s = field_validator("every_s", mode="before")(_duration)

    def path(self, data_dir: Path) -> Path:
        """Where the checkpoints go: ``file``, else ``<data_dir>/audit-checkpoints.jsonl``."""
        return self.file if self.file is not None else data_dir / "audit-checkpoints.jsonl"


class AuditSettings(_Model):
    """Audit log settings; the log lives in ``<data_dir>/bastion.db``.

    ``synchronous`` is SQLite's setting for the log's commits: ``full`` (the
    default) fsyncs the write-ahead log at every commit, so a record committed
    before a call was forwarded survives a power loss; ``normal`` survives a
    crash of Bastion but not of the machine, and saves the fsync (about 0.3 ms
    of latency and 0.1 ms of CPU per call on the benchmark machine).

    ``export`` sends the committed records elsewhere, each destination at least once
    (``bastion.config.export``: a JSON-lines file, syslog, OpenTelemetry logs).
    """

    store_arguments: bool = True
    synchronous: Literal["full", "normal"] = "full"
    checkpoints: CheckpointSettings = CheckpointSettings()
    export: tuple[ExportSettings, ...] = ()

    @field_validator("export")
    @classmethod
    def _export_names(cls, value: tuple[ExportSettings, ...]) -> tuple[ExportSettings, ...]:
        check_export_names(value)
        return value


class BastionConfig(_Model):
    """The whole configuration file."""

    data_dir: Path = Path(".bastion")
    server: ServerSettings = ServerSettings()
    identity: IdentitySettings = IdentitySettings()
    policy: PolicySettings
    audit: AuditSettings = AuditSettings()
    egress: EgressSettings = EgressSettings()
    credentials: VaultSettings = VaultSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    limits: tuple[LimitSettings, ...] = ()
    counters: CounterSettings = CounterSettings()
    session_caps: SessionCaps = SessionCaps()
    data_flow: DataFlowSettings = DataFlowSettings()
    volume: VolumeSettings = VolumeSettings()  # result volume baselines (issue 14)
    stores: StoreSettings = StoreSettings()  # shared backends, replicas (issue 17)
    metrics: MetricsSettings = MetricsSettings()  # Prometheus /metrics (issue 17)
    tracing: TracingSettings = TracingSettings()  # OpenTelemetry traces, off unless configured (issue 17)
    routes: tuple[RouteSettings, ...]

    @field_validator("routes")
    @classmethod
    def _some_routes(cls, value: tuple[RouteSettings, ...]) -> tuple[RouteSettings, ...]:
        # An "after" validator: it runs only when every route is valid, so one bad route
        # gives one error line, not also a misleading "too few routes".
        if not value:
            raise ValueError("at least one route is needed")
        return value

    @model_validator(mode="after")
    def _shared_stores(self) -> BastionConfig:
        if self.stores.shared:
            embedded = [b.store for b in store_backends(self) if b.must_share and not b.shared]
            if embedded:
                raise ValueError(
                    "stores.shared: several replicas need every store shared, but these are still embedded "
                    f"(one process only): {', '.join(embedded)}"
                )
        return self

    @model_validator(mode="after")
    def _external_issuer_routes(self) -> BastionConfig:
        names = {route.name for route in self.routes}
        for index, external in enumerate(self.identity.external_issuers):
            unknown = sorted(set(external.routes) - names)
            if unknown:
                raise ValueError(f"identity.external_issuers.{index}.routes names no route: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _upstream_oauth_needs(self) -> BastionConfig:
        connected = [r.name for r in self.routes if r.credentials is not None and r.credentials.oauth is not None]
        if connected and self.credentials.vault_key is None:
            raise ValueError(
                f"routes {', '.join(connected)} keep per-user upstream tokens: "
                "credentials.vault_key is needed (a reference, e.g. {env: BASTION_VAULT_KEY})"
            )
        if connected and not self.identity.authorization_server.enabled:
            raise ValueError(
                f"routes {', '.join(connected)} are connected in the portal, where people sign in: "
                "identity.authorization_server must be enabled"
            )
        return self

    @model_validator(mode="after")
    def _limits_name_routes(self) -> BastionConfig:
        names = {r.name for r in self.routes}
        seen: set[str] = set()
        for index, limit in enumerate(self.limits):
            if limit.name in seen:
                raise ValueError(f"limits.{index}.name: {limit.name!r} is used twice")
            seen.add(limit.name)
            if limit.match.route is not None and limit.match.route not in names:
                raise ValueError(f"limits.{index}.match.route names no route: {limit.match.route}")
        return self

    @model_validator(mode="after")
    def _unique_routes(self) -> BastionConfig:
        names = [r.name for r in self.routes]
        paths = [r.public_path for r in self.routes]
        for label, values in (("name", names), ("path", paths)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"route {label}s must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def issuer(self) -> str:
        """The ``iss`` of tokens Bastion mints (defaults to the public base URL)."""
        return (self.identity.issuer or self.server.base_url).rstrip("/")

    def route(self, name: str) -> RouteSettings:
        """The route called ``name``. Raises ``ConfigError`` when there is none."""
        for route in self.routes:
            if route.name == name:
                return route
        raise ConfigError(f"no route named {name!r}; routes: {', '.join(r.name for r in self.routes)}")

    def caps_of(self, route: RouteSettings) -> SessionCaps:
        """The session caps that apply on ``route``: its own ``session_caps`` if set, else the
        top-level ``session_caps``."""
        return route.session_caps if route.session_caps is not None else self.session_caps

    def resource_uri(self, route: RouteSettings) -> str:
        """The route's resource URI (RFC 8707 section 2, RFC 9728 ``resource``): base URL + path."""
        return self.server.base_url + route.public_path
