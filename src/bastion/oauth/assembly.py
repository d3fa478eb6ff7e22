"""Building the authorization server from the configuration (called by the gateway's composition root)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.routing import BaseRoute

from bastion.audit.store import AuditLog
from bastion.config import BastionConfig
from bastion.egress.client import EgressGuard
from bastion.errors import ConfigError
from bastion.identity.tokens import TokenIssuer
from bastion.oauth.app import authorization_server_routes
from bastion.oauth.auditing import OAuthAudit
from bastion.oauth.clients import ClientDirectory, DocumentFetch
from bastion.oauth.context import ServerContext
from bastion.oauth.federation import OpenIDProvider
from bastion.oauth.grants import GrantService
from bastion.oauth.metadata import ENDPOINTS
from bastion.oauth.requests import Resources
from bastion.oauth.store import AuthorizationStore
from bastion.oauth.users import LocalUsers
from bastion.stores.counters import RateCounter
from bastion.stores.revocations import RevocationStore

__all__ = ["AuthorizationServer"]


class AuthorizationServer:
    """Bastion's OAuth 2.1 authorization server: its store, its parts and its routes.

    ``store`` keeps its records (not started: ``start`` starts it; ``bastion.stores.backends.
    authorization_store`` builds the configured one); ``rates`` the rate counter the sign-in throttle
    counts on; ``fetch`` fetches client metadata
    documents through the egress guard; ``egress`` is the guard the identity
    providers are reached through (required when any is configured). Raises
    ``ConfigError`` when a client secret reference or the users file cannot be read.
    """

    def __init__(
        self,
        config: BastionConfig,
        *,
        store: AuthorizationStore,
        audit: AuditLog,
        issuer: TokenIssuer,
        revocations: RevocationStore,
        rates: RateCounter,
        fetch: DocumentFetch | None,
        egress: EgressGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = config.identity.authorization_server
        if settings.identity_providers and egress is None:
            raise ConfigError("identity providers need the egress guard")
        callback = config.server.base_url + ENDPOINTS["provider_callback"]
        providers = {
            item.name: OpenIDProvider(item, egress, redirect_uri=callback, clock=clock)
            for item in settings.identity_providers
            if egress is not None
        }
        self.store = store
        resources = Resources({config.resource_uri(route): route.name for route in config.routes})
        self.grants = GrantService(
            self.store,
            issuer,
            revocations,
            resources,
            access_ttl_s=config.identity.default_token_ttl,
            refresh_ttl_s=settings.refresh_token_ttl,
            reuse_grace_s=settings.refresh_reuse_grace,
            clock=clock,
        )
        self.context = ServerContext(
            issuer=config.issuer,
            base_url=config.server.base_url,
            settings=settings,
            store=self.store,
            clients=ClientDirectory(
                settings.clients, self.store, settings.client_metadata_documents, fetch, clock=clock
            ),
            grants=self.grants,
            audit=OAuthAudit(audit, config.issuer),
            resources=resources,
            route_titles={route.name: route.title or route.name for route in config.routes},
            users=LocalUsers.load(settings.users_file) if settings.users_file else None,
            rates=rates,
            providers=providers,
            clock=clock,
        )

    def routes(self) -> list[BaseRoute]:
        """The metadata documents and endpoints to mount at the root of the app."""
        return authorization_server_routes(self.context)

    async def start(self) -> None:
        """Open the store."""
        await self.store.start()

    async def close(self) -> None:
        """Close the store."""
        await self.store.close()

    async def purge(self, now: float) -> int:
        """Delete requests, codes, sign-ins and families expired at ``now`` (epoch s); returns how many rows."""
        return await self.store.purge(now)
