"""The credential plane: what Bastion presents to an upstream on a user's behalf.

The client's own token never goes upstream (docs/architecture.md, "Credentials"). A route's
upstream credential is one of: the user's own OAuth tokens for that upstream, kept in the
encrypted vault and refreshed as needed (``oauth``); a short-lived token minted by RFC 8693
token exchange (``exchange``); or static headers resolved from secret references at start.
"""
