"""A Client ID Metadata Document host over HTTPS on 127.0.0.1, run as a child process by the e2e tests.

    python cimd_server.py --port P --cert C --key K --redirect-uri URI

Documents (``client_id`` is the URL the request was made for, from ``Host`` and path):

    /client.json          a good document for a public client with ``--redirect-uri``
    /mismatch.json        names another ``client_id``
    /to-metadata.json     302 to the cloud metadata address
    /to-private.json      302 to a private address
"""

from __future__ import annotations

import argparse
import json
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--redirect-uri", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = f"https://{self.headers['Host']}{self.path}"
            document = {
                "client_id": url,
                "client_name": "CIMD test client",
                "redirect_uris": [args.redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }
            if self.path == "/client.json":
                self._json(document)
            elif self.path == "/mismatch.json":
                self._json({**document, "client_id": "https://attacker.example/client.json"})
            elif self.path == "/to-metadata.json":
                self._redirect("https://169.254.169.254/latest/meta-data/")
            elif self.path == "/to-private.json":
                self._redirect("https://10.0.0.1/client.json")
            else:
                self.send_error(404)

        def _json(self, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "max-age=60")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *values: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
