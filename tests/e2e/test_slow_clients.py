"""Slow and hostile clients against a real ``bastion serve`` with short limits, over raw sockets.

The gateway runs with ``header_timeout_s: 3``, ``body_timeout_s: 2``,
``max_header_bytes: 16384``, ``max_connections: 250`` and a 64 KiB body limit
(``bastion.transport.connections``). Each test shows what a well-behaved
client gets at the same time, so a refusal can only come from the limit under
test.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx2
import pytest
from tests.e2e.conftest import bastion_env, env_route
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess
from tests.support.e2e_helpers import modern_post, raw_headers, reply_message, rpc

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 3
BODY_TIMEOUT_S = 2
MAX_CONNECTIONS = 250
MAX_HEADER_BYTES = 16384
MAX_BODY = 65536
#: How long after a deadline Bastion may take to act on it (the close grace is 1 s; a loaded machine).
SLACK_S = 2.5
ROUTE = "envdump"


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("slow-clients")
    shutil.copy(DEMO_CEDAR, workdir / "demo.cedar")
    config = {
        "server": {
            "max_body_bytes": MAX_BODY,
            "header_timeout_s": f"{HEADER_TIMEOUT_S}s",
            "body_timeout_s": BODY_TIMEOUT_S,
            "max_header_bytes": MAX_HEADER_BYTES,
            "max_connections": MAX_CONNECTIONS,
        },
        "policy": {"files": [str(workdir / "demo.cedar")]},
        "routes": [env_route(ROUTE)],
    }
    process = BastionProcess(workdir, config)
    with process.start(env=bastion_env()):
        yield process


@pytest.fixture(scope="module")
def token(bastion: BastionProcess) -> str:
    return bastion.mint("alice", ROUTE, "engineering")


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    """Closes every raw socket a test opened, whatever happened."""
    with ExitStack() as stack:
        yield stack


def _connect(bastion: BastionProcess, sockets: ExitStack, first_bytes: bytes = b"") -> socket.socket:
    sock = sockets.enter_context(socket.create_connection(("127.0.0.1", bastion.port), timeout=10))
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _partial_headers(bastion: BastionProcess) -> bytes:
    return f"POST /mcp/{ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{bastion.port}\r\nContent-Type: appl".encode()


def _post_head(bastion: BastionProcess, token: str, framing: str) -> bytes:
    """The complete headers of an MCP POST; ``framing`` is a ``Content-Length`` or ``Transfer-Encoding`` line."""
    headers = raw_headers(token, host=f"127.0.0.1:{bastion.port}")
    lines = [f"POST /mcp/{ROUTE} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), framing]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes | None:
    """Everything ``sock`` receives until Bastion closes it, or None when it is still open at ``deadline``."""
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a ``Content-Length``: ``(status, headers, body)``."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _jsonrpc_error(body: bytes) -> dict[str, object]:
    message = json.loads(body)
    assert message["jsonrpc"] == "2.0"
    assert message["id"] is None
    error = message["error"]
    assert isinstance(error, dict)
    return error


def _served(bastion: BastionProcess, token: str) -> httpx2.Response:
    """A well-behaved client's ``tools/list`` on a connection of its own."""
    with httpx2.Client(timeout=10.0) as http:
        return modern_post(http, bastion.url(ROUTE), token, "tools/list")


def _refusals(bastion: BastionProcess, reason: str) -> int:
    with sqlite3.connect(bastion.database) as db:
        row = db.execute(
            "SELECT count(*) FROM audit_events WHERE json_extract(record, '$.decision.reason') = ?", (reason,)
        ).fetchone()
    return int(row[0])


def test_partial_headers_are_closed_after_the_header_timeout_while_others_are_served(
    bastion: BastionProcess, token: str, sockets: ExitStack
) -> None:
    started = time.monotonic()
    slow = [_connect(bastion, sockets, _partial_headers(bastion)) for _ in range(200)]
    silent = _connect(bastion, sockets)  # connects and never sends a byte
    served = _served(bastion, token)
    assert served.status_code == 200, served.text
    assert "tools" in reply_message(served)["result"]
    assert time.monotonic() - started < HEADER_TIMEOUT_S, "the machine is too slow for this test's timing"

    deadline = started + HEADER_TIMEOUT_S + SLACK_S
    answers = [_read_until_closed(sock, deadline) for sock in slow]
    still_open = sum(answer is None for answer in answers)
    assert still_open == 0, f"{still_open} of 200 connections with partial headers were still open"
    assert time.monotonic() - started >= HEADER_TIMEOUT_S - 0.5, "closed before the timeout"
    first = answers[0]
    assert first is not None
    status_line, _, body = first.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in body
    error = _jsonrpc_error(body.partition(b"\r\n\r\n")[2])
    assert error["code"] == -32600
    assert "headers did not arrive within 3 s" in str(error["message"])
    assert _read_until_closed(silent, deadline) == b""  # nothing sent, nothing answered: just closed


def test_connections_beyond_max_connections_are_answered_503_until_slow_ones_are_closed(
    bastion: BastionProcess, token: str, sockets: ExitStack
) -> None:
    """``max_connections`` connections are served; one more gets uvicorn's 503 (``limit_concurrency``)."""
    started = time.monotonic()
    for _ in range(MAX_CONNECTIONS - 1):
        _connect(bastion, sockets, _partial_headers(bastion))
    last_place = _served(bastion, token)
    assert last_place.status_code == 200, last_place.text
    for _ in range(2):
        _connect(bastion, sockets, _partial_headers(bastion))
    beyond = _served(bastion, token)
    assert time.monotonic() - started < HEADER_TIMEOUT_S, "the machine is too slow for this test's timing"
    assert beyond.status_code == 503
    assert beyond.headers.get("connection") == "close"

    time.sleep(HEADER_TIMEOUT_S + SLACK_S - (time.monotonic() - started))
    again = _served(bastion, token)  # the header timeout freed the places
    assert again.status_code == 200, again.text


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_stops_arriving_is_answered_408_and_closed(
    bastion: BastionProcess, token: str, sockets: ExitStack, framing: str
) -> None:
    before = _refusals(bastion, "body_timeout")
    if framing == "chunked":
        head, pieces = _post_head(bastion, token, "Transfer-Encoding: chunked"), [b'5\r\n{"jso\r\n', b"3\r\nnrp\r\n"]
    else:
        head, pieces = _post_head(bastion, token, "Content-Length: 200"), [b'{"jso', b"nrp"]
    sock = _connect(bastion, sockets, head + pieces[0])
    started = time.monotonic()
    time.sleep(0.5)
    sock.sendall(pieces[1])  # trickles, then stops

    status, headers, body = _read_response(sock, BODY_TIMEOUT_S + SLACK_S)
    assert BODY_TIMEOUT_S - 0.5 <= time.monotonic() - started <= BODY_TIMEOUT_S + SLACK_S
    assert (status, headers["content-type"]) == (408, "application/json")
    error = _jsonrpc_error(body)
    assert error["code"] == -32600
    assert "body did not arrive within 2 s" in str(error["message"])
    assert _read_until_closed(sock, started + BODY_TIMEOUT_S + 1 + SLACK_S) == b""
    assert _refusals(bastion, "body_timeout") == before + 1  # audited like every refused POST


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_oversize_body_gets_413_and_a_client_that_sends_on_is_closed(
    bastion: BastionProcess, token: str, sockets: ExitStack, framing: str
) -> None:
    """The 413 comes first, in JSON-RPC form; the rest of the body is not read forever."""
    if framing == "chunked":
        head = _post_head(bastion, token, "Transfer-Encoding: chunked")
        first = b"%x\r\n" % (MAX_BODY + 100) + b"x" * (MAX_BODY + 100) + b"\r\n"
        more = b"1\r\nx\r\n"
    else:
        head = _post_head(bastion, token, f"Content-Length: {10 * MAX_BODY}")
        first, more = b"x" * (MAX_BODY + 100), b"x"
    sock = _connect(bastion, sockets, head + first)
    started = time.monotonic()

    status, headers, body = _read_response(sock, 5)
    assert (status, headers["content-type"]) == (413, "application/json")
    error = _jsonrpc_error(body)
    assert error["code"] == -32600
    assert error["message"] == f"Request body exceeds {MAX_BODY} bytes"

    closed_after = None
    while time.monotonic() - started < BODY_TIMEOUT_S + 1 + SLACK_S:
        try:
            sock.sendall(more)
        except OSError:  # broken pipe or reset: Bastion closed the connection
            closed_after = time.monotonic() - started
            break
        time.sleep(0.1)
    assert closed_after is not None, "a body trickling on after the 413 kept the connection open"
    assert closed_after >= BODY_TIMEOUT_S - 0.5


def test_headers_over_max_header_bytes_are_answered_431_and_closed(
    bastion: BastionProcess, token: str, sockets: ExitStack
) -> None:
    padding = "".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(20)).encode()
    sock = _connect(bastion, sockets, _partial_headers(bastion).rpartition(b"Content-Type")[0] + padding)
    answer = _read_until_closed(sock, time.monotonic() + 5)
    assert answer is not None, "the connection was still open"
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert "more than 16384 bytes" in str(_jsonrpc_error(rest.partition(b"\r\n\r\n")[2])["message"])
    assert _served(bastion, token).status_code == 200  # a ~1 KB bearer token is far from the limit


def test_a_whole_request_with_headers_over_max_header_bytes_is_answered_431_unserved(
    bastion: BastionProcess, token: str, sockets: ExitStack
) -> None:
    """Headers, body and all in one write: the limit holds when the headers are complete too."""
    body = json.dumps(rpc("tools/list")).encode()
    head = _post_head(bastion, token, f"X-Pad: {'a' * 20_000}\r\nContent-Length: {len(body)}")
    sock = _connect(bastion, sockets, head + body)
    answer = _read_until_closed(sock, time.monotonic() + 5)
    assert answer is not None, "the connection was still open"
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert "more than 16384 bytes" in str(_jsonrpc_error(rest.partition(b"\r\n\r\n")[2])["message"])


def test_an_unknown_method_of_10000_characters_is_quoted_only_in_part(bastion: BastionProcess, token: str) -> None:
    name = "m" * 10_000
    with httpx2.Client(timeout=10.0) as http:
        response = modern_post(http, bastion.url(ROUTE), token, name)
    assert response.status_code == 404, response.text  # 2026-07-28: an unknown method
    message = str(reply_message(response)["error"]["message"])
    assert message == f"Method not found: {'m' * 200}…(9800 more characters)"


def test_an_unsupported_protocol_version_of_5000_characters_is_quoted_only_in_part(
    bastion: BastionProcess, token: str
) -> None:
    headers = raw_headers(token, mcp_protocol_version="v" * 5000)
    with httpx2.Client(timeout=10.0) as http:
        response = http.post(bastion.url(ROUTE), json=rpc("tools/list"), headers=headers)
    assert response.status_code == 400
    message = str(response.json()["error"]["message"])
    assert message == f"Unsupported protocol version: MCP-Protocol-Version '{'v' * 200}…(4800 more characters)'"
    assert response.json()["error"]["data"]["requested"] == f"{'v' * 200}…(4800 more characters)"
