"""A hostile OpenID Connect provider for the relying-party attack table: HTTPS on 127.0.0.1, every answer
set by the test.

The server runs in a thread of the test process (``ThreadingHTTPServer`` wrapped in TLS with a leaf of
``tests.support.pki``, as ``cimd_server.py`` does), so clients must trust ``pki.ca_file``. Its issuer is
``https://127.0.0.1:<port>``. What it serves, each a ``Reply`` the test may replace before the request:

    GET  /.well-known/openid-configuration   ``discovery`` (a dict; a ``Reply`` in ``discovery_reply`` wins)
    GET  /jwks                               ``jwks`` (a JWK Set dict)
    POST /token                              ``token``   (default: 500, nothing set)
    GET  /userinfo                           ``userinfo`` (default: 500, nothing set)

Anything else answers 404. Every request is kept in ``seen`` (method, path, lowercase headers, body).
``HostileProvider.signed`` makes ID tokens with any header and claims, signed by any joserfc key (or not at
all: ``alg: none``), so a test can forge exactly the token it wants.

    with HostileProvider(pki.localhost) as op:
        op.token = Reply(200, {"access_token": "at", "token_type": "Bearer", "id_token": op.signed(claims)})
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.support.pki import Leaf


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: ``body`` as JSON unless it is bytes; extra ``headers``."""

    status: int
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


@dataclass(frozen=True)
class Seen:
    """One request the provider received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class HostileProvider:
    """The provider (a context manager: serving on enter, stopped on exit).

    ``rsa`` (kid ``rsa-1``) and ``ec`` (kid ``ec-1``) are the keys its JWKS publishes; pass
    other keys to ``signed`` to forge. Keys are given (RSA generation is slow), or made here.
    """

    def __init__(self, leaf: Leaf, *, rsa: RSAKey | None = None, ec: ECKey | None = None) -> None:
        self.rsa = rsa or RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
        self.ec = ec or ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
        self.seen: list[Seen] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(leaf.certfile, leaf.keyfile)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.issuer = f"https://127.0.0.1:{self.port}"
        self.discovery: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "userinfo_endpoint": self.issuer + "/userinfo",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        }
        self.discovery_reply: Reply | None = None
        self.jwks: dict[str, Any] = {
            "keys": [self.rsa.as_dict(private=False, use="sig"), self.ec.as_dict(private=False, use="sig")]
        }
        self.token = Reply(500, {"error": "server_error"})
        self.userinfo = Reply(500, {"error": "server_error"})
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="hostile-oidc", daemon=True
        )

    def __enter__(self) -> HostileProvider:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received for ``path``, oldest first."""
        return [seen for seen in self.seen if seen.path == path]

    def signed(self, claims: Mapping[str, Any], key: Any = None, header: Mapping[str, Any] | None = None) -> str:
        """A JWS of ``claims``: signed with ``key`` (default ``rsa``) and ``header`` (default its alg and kid).

        ``header={"alg": "none"}`` makes an unsecured JWS (empty signature); a header whose ``alg`` is not
        a string is signed RS256 all the same (joserfc would refuse both).
        """
        key = key or self.rsa
        if header is not None and (header.get("alg") == "none" or not isinstance(header.get("alg"), str)):
            return self._raw(dict(header), claims, key)
        alg = "ES256" if isinstance(key, ECKey) else "RS256"
        protected = dict(header) if header is not None else {"alg": alg, "kid": key.kid}
        return jwt.encode(protected, dict(claims), key, algorithms=[str(protected["alg"])])

    def _raw(self, header: dict[str, Any], claims: Mapping[str, Any], key: Any) -> str:
        """A JWS joserfc would refuse to make: ``alg: none`` (no signature), or an ``alg`` that is not a
        string (signed RS256 with ``key``, an ``RSAKey``)."""
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(dict(claims)).encode())
        if header.get("alg") == "none":
            return signing_input + "."
        signature = key.private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)

    def _reply_for(self, method: str, path: str) -> Reply:
        if method == "GET" and path == "/.well-known/openid-configuration":
            return self.discovery_reply or Reply(200, self.discovery)
        if method == "GET" and path == "/jwks":
            return Reply(200, self.jwks, content_type="application/jwk-set+json")
        if method == "POST" and path == "/token":
            return self.token
        if method == "GET" and path == "/userinfo":
            return self.userinfo
        return Reply(404, {"error": "not_found"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                headers = {name.lower(): value for name, value in self.headers.items()}
                provider.seen.append(Seen(method, path, headers, body))
                reply = provider._reply_for(method, path)
                data = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Cache-Control", "no-store")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def log_message(self, format: str, *values: object) -> None:
                return

        return Handler
