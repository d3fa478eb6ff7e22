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
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        timeout_s: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.pki = pki
        self.accounts = tuple(accounts)
        self.clients = tuple(clients)
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
        return {
            "port": self.port,
            "issuer": self.issuer,
            "certfile": str(self.pki.localhost.certfile),
            "keyfile": str(self.pki.localhost.keyfile),
            "clients": clients,
            "accounts": accounts,
        }

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

    def log(self) -> str:
        """What the process wrote to stderr so far (errors, oidc-provider warnings)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OIDCProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
