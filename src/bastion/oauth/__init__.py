"""Bastion's OAuth 2.1 authorization server (MCP 2025-11-25, basic/authorization).

Public API (the implementation modules are private to the package)::

    AuthorizationServer(config, store=..., audit=..., issuer=..., ...)      the assembled server
    AuthorizationFlowStore / SQLiteFlowStore                               its short-lived records
    AuthorizationGrantStore / SQLiteGrantStore                             its durable records
    AuthorizationStore / SQLiteAuthorizationStore                          both, in one backend
    (the PostgreSQL backends, for replicas: ``oauth.store_postgres``, ``_flows``, ``_grants``)
    LocalUsers                                                             development sign-in (argon2id)
    authorization_server_metadata(issuer, ...)                             RFC 8414 document
"""

from bastion.oauth.assembly import AuthorizationServer
from bastion.oauth.metadata import authorization_server_metadata
from bastion.oauth.store import AuthorizationFlowStore, AuthorizationGrantStore, AuthorizationStore
from bastion.oauth.store_sqlite import SQLiteAuthorizationStore
from bastion.oauth.store_sqlite_flows import SQLiteFlowStore
from bastion.oauth.store_sqlite_grants import SQLiteGrantStore
from bastion.oauth.users import LocalUsers

__all__ = [
    "AuthorizationFlowStore",
    "AuthorizationGrantStore",
    "AuthorizationServer",
    "AuthorizationStore",
    "LocalUsers",
    "SQLiteAuthorizationStore",
    "SQLiteFlowStore",
    "SQLiteGrantStore",
    "authorization_server_metadata",
]
