"""Bastion's OAuth 2.1 authorization server (MCP 2025-11-25, basic/authorization).

Public API (the implementation modules are private to the package)::

    AuthorizationServer(config, database=..., audit=..., issuer=..., ...)   the assembled server
    AuthorizationStore / SQLiteAuthorizationStore                          its state
    LocalUsers                                                             development sign-in (argon2id)
    authorization_server_metadata(issuer, ...)                             RFC 8414 document
"""

from bastion.oauth.assembly import AuthorizationServer
from bastion.oauth.metadata import authorization_server_metadata
from bastion.oauth.store import AuthorizationStore
from bastion.oauth.store_sqlite import SQLiteAuthorizationStore
from bastion.oauth.users import LocalUsers

__all__ = [
    "AuthorizationServer",
    "AuthorizationStore",
    "LocalUsers",
    "SQLiteAuthorizationStore",
    "authorization_server_metadata",
]
