"""Audit records for the authorization server: every authorization, sign-in, token, revocation and
registration request, allowed or refused, is one ``decision`` record in the same hash chain as calls.

``method`` is ``oauth/authorize``, ``oauth/sign-in``, ``oauth/consent``, ``oauth/token``,
``oauth/revoke`` or ``oauth/register``, and the portal's ``upstream/connect``,
``upstream/disconnect`` and ``audit/search`` (an auditor's search: ``subject``, ``tool``, and
the effect searched for as ``decision``); ``target`` the client id; ``route`` the route the
request is for (``-`` when it names none); ``decision.reason`` the OAuth error code of a
refusal; ``arguments`` the request's non-secret parameters (codes, tokens, verifiers,
passwords and secrets are never recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bastion.audit.build import decision_body
from bastion.audit.store import AuditLog
from bastion.ids import new_id
from bastion.oauth.records import UserIdentity
from bastion.principal import Principal

__all__ = ["RECORDED_PARAMETERS", "OAuthAudit"]

#: The request parameters an OAuth audit record keeps; anything else (codes, tokens, secrets) is dropped.
RECORDED_PARAMETERS = frozenset(
    {
        "response_type", "redirect_uri", "scope", "resource", "code_challenge_method", "grant_type",
        "type_hint", "client_name", "decision", "username", "state_present", "provider", "provider_sub",
        "dropped_groups", "problem", "issuer", "client", "revoked", "deleted", "subject", "tool",
    }
)  # fmt: skip


_RENAMED = {"token_type_hint": "type_hint"}


class OAuthAudit:
    """Writes the authorization server's records to ``log`` (``AuditLog``); ``issuer`` is Bastion's."""

    def __init__(self, log: AuditLog, issuer: str) -> None:
        self._log = log
        self._issuer = issuer

    async def record(
        self,
        method: str,
        *,
        effect: Literal["allow", "deny"],
        reason: str | None,
        client_id: str | None,
        route: str | None,
        user: UserIdentity | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """Commit one record. Raises ``AuditUnavailable`` when the log cannot write it (the caller
        then refuses the request: fail closed)."""
        principal = None
        if user is not None:
            principal = Principal(
                kind="User",
                sub=user.sub,
                issuer=self._issuer,
                auth_method=user.idp,
                expires_at=0,
                idp=user.idp,
                email=user.email,
                name=user.name,
                groups=user.groups,
                client_id=client_id,
            )
        # token_type_hint is kept as type_hint: the redactor takes any key naming a token for a secret
        renamed = {_RENAMED.get(k, k): v for k, v in (parameters or {}).items()}
        kept = {k: v for k, v in renamed.items() if k in RECORDED_PARAMETERS}
        body = decision_body(
            route=route or "-",
            method=method,
            effect=effect,
            policy_ids=(),
            obligations={},
            reason=reason if effect == "deny" else None,
            policy_version=None,
            arguments=kept,
            principal=principal,
            target=client_id,
            session=None,
            decision_id=new_id(),
        )
        await self._log.append(body)
