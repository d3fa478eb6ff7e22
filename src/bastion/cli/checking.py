"""``bastion check``: validate everything that can be validated without starting anything."""

from __future__ import annotations

from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.config import BastionConfig, RouteSettings
from bastion.config.stores import store_backends
from bastion.credentials.vault import VaultKeys
from bastion.egress import AllowList
from bastion.egress.destinations import refusal
from bastion.egress.target import parse_target
from bastion.errors import ConfigError, EgressDenied
from bastion.oauth import LocalUsers
from bastion.policy import PolicyEngine
from bastion.upstream.configured import resolve_values

__all__ = ["check_config", "inventory_warnings"]


def check_config(config: BastionConfig, console: Console) -> None:
    """Load the policies (and the shadow policies) against the schema, resolve every secret reference
    and check each HTTP upstream whose URL names an IP address against the egress rules (a name is
    resolved at run time).

    Raises ``ConfigError`` naming the first problem. Prints a summary on success, with a
    warning for each weak spot of a route's tool inventory (``inventory_warnings``), which
    does not fail the check.
    """
    engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
    egress_allow = AllowList.parse(config.egress.allow)
    table = Table(title="routes", show_lines=False)
    for column in ("route", "path", "resource URI", "upstream"):
        table.add_column(column)
    for route in config.routes:
        if route.http is not None:
            resolve_values(route.http.headers, f"routes.{route.name}.http.headers")
            upstream = f"http {route.http.url}"
        elif route.stdio is not None:
            resolve_values(route.stdio.env, f"routes.{route.name}.stdio.env")
            upstream = "stdio " + " ".join((route.stdio.command, *route.stdio.args))
        else:  # pragma: no cover - excluded by RouteSettings validation
            upstream = "?"
        table.add_row(route.name, route.public_path, config.resource_uri(route), upstream)
    console.print(table)
    console.print(f"policies: {len(engine.policy_ids)} loaded and validated (version {engine.version[:12]})")
    if config.policy.shadow_files:
        shadow = PolicyEngine.load(config.policy.shadow_files, config.policy.schema_file)
        console.print(f"shadow policies: {len(shadow.policy_ids)} loaded and validated, never enforced "
                      f"(version {shadow.version[:12]})")  # fmt: skip
    console.print(f"issuer: {config.issuer}  max token TTL: {config.identity.max_token_ttl}s")
    _check_stores(config, console)
    _check_authorization_server(config, console)
    allowed = ", ".join(config.egress.allow) or "none (every private, loopback and metadata address refused)"
    console.print(f"egress allow list: {allowed}")
    for route in config.routes:
        if route.http is not None:
            _check_upstream(route, egress_allow, console)
        _check_credentials(config, route, console)
        guarded = route.url_arguments
        if guarded is not None:
            marked = [*guarded.names, *(["any format: uri"] if guarded.format_uri else [])]
            console.print(
                f"route {route.name}: URL arguments {', '.join(marked) or 'none marked'}; "
                f"allowed: {', '.join(guarded.allow) or 'public addresses only'}"
            )
    warnings = [warning for route in config.routes for warning in inventory_warnings(route)]
    warnings += _check_approvals(config, engine, console)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    counted = f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''})" if warnings else ""
    console.print(f"[bold green]OK[/]{counted}")


def inventory_warnings(route: RouteSettings) -> list[str]:
    """What ``bastion check`` warns about a route's tool inventory (``routes[].tools``): a route
    that does not trust annotations, whose tools without a configured risk are all judged
    destructive, and each configured tool without an ``owner`` or ``classification``."""
    where = f"routes.{route.name}"
    warnings = []
    if not route.trust_annotations:
        given = sum(1 for tool in route.tools.values() if tool.risk is not None)
        subject = f"every tool but the {given} given a risk in {where}.tools" if given else "every tool"
        warnings.append(
            f"route {route.name}: the upstream's tool annotations are not trusted, so {subject} is treated "
            f"as destructive; give tools a risk in {where}.tools, or set {where}.trust_annotations: true "
            "if the upstream is trusted to describe its tools"
        )
    for name, tool in route.tools.items():
        missing = [key for key in ("owner", "classification") if getattr(tool, key) is None]
        if missing:
            warnings.append(f"route {route.name}: tool {name!r} has no {' and no '.join(missing)} ({where}.tools)")
    return warnings


def _check_approvals(config: BastionConfig, engine: PolicyEngine, console: Console) -> list[str]:
    """Print the approval settings (resolving the webhook secret: ``ConfigError`` when it cannot be);
    return a warning when policies ask for approval but nobody could decide (no portal)."""
    settings = config.approvals
    hook = settings.webhook
    if hook is not None:
        hook.secret.resolve()
    asking = engine.approval_policy_ids
    where = f"webhook {urlsplit(hook.url).hostname}" if hook is not None else "no webhook"
    console.print(f"approvals: {len(asking)} polic{'y asks' if len(asking) == 1 else 'ies ask'}; "
                  f"hold {settings.hold}s, grants live {settings.ttl}s; {where}")  # fmt: skip
    if asking and not config.identity.authorization_server.enabled:
        return [
            f"policies {', '.join(asking)} ask for approval, but nobody can give one: the approvals inbox and its "
            "API (bastion approvals approve) are in the portal, which needs identity.authorization_server"
        ]
    return []


def _check_stores(config: BastionConfig, console: Console) -> None:
    """Print where each store keeps its state and whether replicas share it; resolve the PostgreSQL
    and Redis password references (``ConfigError`` when one cannot be). A shared deployment
    (``stores.shared``) with an embedded store left was refused when the configuration loaded."""
    services = [("stores.postgres.password", config.stores.postgres), ("stores.redis.password", config.stores.redis),
                ("counters.redis_password", config.counters)]  # fmt: skip
    for where, service in services:
        try:
            if service is not None:
                service.resolved_url()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc
    table = Table(title="stores" + (" (several replicas: stores.shared)" if config.stores.shared else ""))
    for column in ("store", "backend", "replicas"):
        table.add_column(column)
    for backend in store_backends(config):
        replicas = "shared" if backend.shared else "this process only" if backend.must_share else "each its own"
        table.add_row(backend.store, backend.backend, replicas)
    console.print(table)


def _check_authorization_server(config: BastionConfig, console: Console) -> None:
    """Resolve client secrets and load the users file; print what clients can use."""
    server = config.identity.authorization_server
    if not server.enabled:
        console.print("authorization server: off (tokens only from `bastion token mint` or external issuers)")
        return
    secrets = [("clients", i, c.client_secret) for i, c in enumerate(server.clients)]
    secrets += [("identity_providers", i, p.client_secret) for i, p in enumerate(server.identity_providers)]
    for kind, index, secret in secrets:
        if secret is not None:
            try:
                secret.resolve()
            except ConfigError as exc:
                raise ConfigError(f"identity.authorization_server.{kind}.{index}.client_secret: {exc.message}") from exc
    methods = [f"OpenID Connect {p.name} ({p.issuer})" for p in server.identity_providers]
    if server.users_file is not None:
        users = LocalUsers.load(server.users_file)
        methods.append(f"local users file {server.users_file} ({len(users.usernames)} users; development only)")
    sign_in = ", ".join(methods) or "none configured (nobody can sign in)"
    documents = "on" if server.client_metadata_documents.enabled else "off"
    registration = "on" if server.dynamic_registration else "off"
    console.print(
        f"authorization server: {len(server.clients)} registered clients, metadata documents {documents}, "
        f"dynamic registration {registration}; scopes {' '.join(server.scopes)}; sign-in: {sign_in}"
    )


def _check_upstream(route: RouteSettings, egress_allow: AllowList, console: Console) -> None:
    """Print the route's HTTP upstream, its allow list and whether plain http is allowed; raise
    ``ConfigError`` naming ``routes.<name>.http.url`` when the URL's IP literal would be refused."""
    http = route.http
    if http is None:  # pragma: no cover - only called for HTTP routes
        return
    where = f"routes.{route.name}.http"
    try:
        target = parse_target(http.url, allow_http=http.allow_http)
    except EgressDenied as exc:  # pragma: no cover - excluded by HttpUpstream validation
        raise ConfigError(f"{where}.url: {exc.message}") from None
    if target.address is not None:
        why = refusal(target.host, target.address, target.port, AllowList.parse(http.allow), egress_allow)
        if why is not None:
            raise ConfigError(
                f"{where}.url: the egress guard refuses {target.host}, {why}; if the upstream is there on "
                f"purpose, list it in {where}.allow (or egress.allow)"
            )
    console.print(
        f"route {route.name}: upstream {http.url}; allowed: {', '.join(http.allow) or 'public addresses only'}; "
        f"plain http: {'allowed' if http.allow_http else 'refused (https only)'}"
    )


def _check_credentials(config: BastionConfig, route: RouteSettings, console: Console) -> None:
    """Resolve the route's upstream credential secrets (and the vault key) and print what each user's
    calls carry upstream. Raises ``ConfigError`` naming the key that cannot be resolved."""
    credentials = route.credentials
    if credentials is None:
        return
    where = f"routes.{route.name}.credentials"
    oauth, exchange = credentials.oauth, credentials.token_exchange
    secret = oauth.client_secret if oauth is not None else exchange.client_secret if exchange is not None else None
    kind = "oauth" if oauth is not None else "token_exchange"
    if secret is not None:
        try:
            secret.resolve()
        except ConfigError as exc:
            raise ConfigError(f"{where}.{kind}.client_secret: {exc.message}") from exc
    if oauth is not None:
        VaultKeys.from_settings(config.credentials)
        server = oauth.issuer or "discovered from the upstream (RFC 9728)"
        client = oauth.client_id or f"registered by Bastion ({oauth.registration})"
        console.print(
            f"route {route.name}: each user connects in the portal; authorization server {server}; "
            f"client {client}; tokens sealed in the vault"
        )
    elif exchange is not None:
        target = exchange.audience or exchange.resource
        console.print(f"route {route.name}: RFC 8693 token exchange at {exchange.token_endpoint} for {target}")
