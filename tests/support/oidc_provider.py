"""A real OpenID Connect provider on loopback over HTTPS, for end-to-end tests.

``OIDCProvider`` runs ``tests/support/oidc_provider.mjs`` (the ``oidc-provider`` npm package,
v9, with the project's Node 22 from ``.tools``) as a child process on a free port of
127.0.0.1, serving the test PKI's ``localhost`` certificate, so clients must trust
``pki.ca_file``. The issuer is ``https://127.0.0.1:<port>``.

What the provider does (see the script's header for details): authorization code flow with
PKCE S256 required, public clients (no secret, ``token_endpoint_auth_method`` "none") or
confidential ones (``client_secret_basic``), RS256 ID tokens, scopes ``openid`` (sub),
``email`` (email, email_verified), ``profile`` (name) and ``groups`` (groups). The scope
claims are served by userinfo, not in the ID token (oidc-provider's ``conformIdTokenClaims``).
Signing in is a plain HTML form at ``/interaction/<uid>`` (fields ``login``, ``password``,
POSTed to ``/interaction/<uid>/login``); consent is granted automatically.

Opt-in options of ``OIDCProvider`` (all off by default; the script's header has the details):

- ``resource_servers={uri: OIDCResourceServer(scopes, access_token_ttl, access_token_format)}``:
  RFC 8707 resource indicators. ``resource=uri`` at the authorization endpoint gets an access
  token for that audience; the token request needs no ``resource`` (the granted one is used, also
  on refresh), and one it sends must be a single granted value. Unknown resources: invalid_target.
- ``refresh_tokens=True``: clients with the ``refresh_token`` grant (``OIDCClient.grant_types``, or
  registered) get a refresh token, no ``offline_access`` or ``prompt=consent`` needed.
  ``rotate_refresh_tokens`` (default True) rotates on each use; without rotation the refresh
  response still has ``refresh_token``, the same value as presented.
- ``revocation=True`` (RFC 7009, ``/token/revocation``; revoking an access token deletes its
  grant's refresh token too, revoking a refresh token revokes the grant), ``introspection=True``
  (RFC 7662, ``/token/introspection``; confidential clients may introspect any token),
  ``registration=True`` (RFC 7591 at ``/reg``, open: no initial access token).
- OAuth Client ID Metadata Documents are not offered: oidc-provider 9.13.3 has them only as an
  experimental feature whose fetch refuses loopback addresses.

``events()`` reads the test-only ``GET /test/events``: what the provider did (grants issued,
refreshed, revoked; clients registered), oldest first.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2

from tests.support.bastion_process import REPO, free_port, stop
from tests.support.pki import Pki

NODE = REPO / ".tools" / "bin" / "node"
SCRIPT = REPO / "tests" / "support" / "oidc_provider.mjs"


@dataclass(frozen=True)
class OIDCAccount:
    """A user of the provider: ``login`` is both the sign-in name and the ``sub`` claim."""

    login: str
    password: str
    email: str
    name: str
    groups: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class OIDCClient:
    """A registered client: public (PKCE only) without ``client_secret``, else ``client_secret_basic``."""

    client_id: str
    redirect_uris: Sequence[str]
    client_secret: str | None = None
    #: The grant types it may use; ``None`` is ``("authorization_code",)``. ``"refresh_token"``
    #: needs ``OIDCProvider(refresh_tokens=True)``; ``()`` makes a client that only authenticates
    #: (e.g. a resource server calling the introspection endpoint; no ``redirect_uris`` needed).
    grant_types: Sequence[str] | None = None


@dataclass(frozen=True)
class OIDCResourceServer:
    """A resource server (RFC 8707 resource indicator): the scopes it offers and its access tokens."""

    scopes: Sequence[str]
    #: Lifetime of its access tokens in seconds; ``None`` is the provider's 3600.
    access_token_ttl: int | None = None
    #: ``"opaque"`` (introspectable, revocable) or ``"jwt"`` (RFC 9068, RS256, verify with the JWKS).
    access_token_format: Literal["opaque", "jwt"] = "opaque"


class OIDCProvider:
    """A running ``oidc-provider`` child process (a context manager: started on enter, stopped on exit).

    ``workdir`` receives ``oidc-provider.json`` (the configuration), ``oidc-provider.out``
    (stdout) and ``oidc-provider.log`` (stderr). ``issuer`` is ``https://127.0.0.1:<port>``;
    the discovery document is at ``<issuer>/.well-known/openid-configuration``.

    ``start()`` raises ``RuntimeError`` (with the log) if the process exits or does not print
    its ``READY`` line within ``timeout_s``.
    """

    def __init__(
        self,
        workdir: Path,
        pki: Pki,
        *,
        accounts: Sequence[OIDCAccount],
        clients: Sequence[OIDCClient],
        resource_servers: Mapping[str, OIDCResourceServer] | None = None,
        refresh_tokens: bool = False,
        rotate_refresh_tokens: bool = True,
        revocation: bool = False,
        introspection: bool = False,
        registration: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.pki = pki
        self.accounts = tuple(accounts)
        self.clients = tuple(clients)
        self.resource_servers = dict(resource_servers or {})
        self.refresh_tokens = refresh_tokens
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.revocation = revocation
        self.introspection = introspection
        self.registration = registration
        self.timeout_s = timeout_s
        self.port = free_port()
        self.issuer = f"https://127.0.0.1:{self.port}"
        self.config_path = workdir / "oidc-provider.json"
        self.stdout_path = workdir / "oidc-provider.out"
        self.log_path = workdir / "oidc-provider.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def discovery_url(self) -> str:
        """The OpenID Provider Configuration document's URL."""
        return f"{self.issuer}/.well-known/openid-configuration"

    def config(self) -> dict[str, Any]:
        """The JSON configuration the script reads (see ``oidc_provider.mjs``)."""
        clients = []
        for client in self.clients:
            entry: dict[str, Any] = {"client_id": client.client_id, "redirect_uris": list(client.redirect_uris)}
            if client.client_secret is not None:
                entry["client_secret"] = client.client_secret
            if client.grant_types is not None:
                entry["grant_types"] = list(client.grant_types)
            clients.append(entry)
        accounts = {
            account.login: {
                "password": account.password,
                "email": account.email,
                "name": account.name,
                "groups": list(account.groups),
            }
            for account in self.accounts
        }
        config: dict[str, Any] = {
            "port": self.port,
            "issuer": self.issuer,
            "certfile": str(self.pki.localhost.certfile),
            "keyfile": str(self.pki.localhost.keyfile),
            "clients": clients,
            "accounts": accounts,
        }
        if self.resource_servers:
            config["resource_servers"] = {
                uri: {
                    "scopes": list(server.scopes),
                    "format": server.access_token_format,
                    **({} if server.access_token_ttl is None else {"access_token_ttl": server.access_token_ttl}),
                }
                for uri, server in self.resource_servers.items()
            }
        if self.refresh_tokens:
            config["refresh_tokens"] = True
            config["rotate_refresh_tokens"] = self.rotate_refresh_tokens
        for feature in ("revocation", "introspection", "registration"):
            if getattr(self, feature):
                config[feature] = True
        return config

    def start(self) -> OIDCProvider:
        """Write the configuration, run the script and wait for ``READY <issuer>``."""
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        with self.stdout_path.open("wb") as out, self.log_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(NODE), str(SCRIPT), str(self.config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if f"READY {self.issuer}" in self.stdout_path.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"oidc-provider exited with {self.proc.returncode} before it was ready\n"
                    f"--- oidc-provider log ---\n{self.log()}"
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"oidc-provider was not ready in {self.timeout_s}s\n--- oidc-provider log ---\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM the process (SIGKILL if it lingers); a no-op if it is not running."""
        if self.proc is not None:
            stop(self.proc)

    def events(self) -> list[dict[str, Any]]:
        """What the provider did so far, oldest first, from ``GET /test/events`` (trusting the test CA):
        ``{"event", "client_id", "account_id", "grant_type", "grant_id"}`` for ``grant.success``,
        ``refresh_token.consumed``, ``access_token.destroyed``, ``refresh_token.destroyed``,
        ``grant.revoked`` and ``registration_create.success`` (fields that do not apply are ``None``)."""
        tls = ssl.create_default_context(cafile=self.pki.ca_file)
        response = httpx2.get(f"{self.issuer}/test/events", verify=tls, timeout=10.0)
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    def log(self) -> str:
        """What the process wrote to stderr so far (errors, oidc-provider warnings)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OIDCProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
