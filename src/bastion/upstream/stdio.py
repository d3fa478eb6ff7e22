"""stdio upstreams: an MCP server process that Bastion starts, owns and restarts.

Bastion is the process's only MCP client (MCP 2025-11-25 basic/transports,
"stdio"). It performs the initialize handshake once per process start and then
multiplexes every downstream session's requests over the one connection:
request ids and progress tokens are rewritten to Bastion's own so two clients
can never see each other's answers.

The process gets a scrubbed environment (only what the route names, plus
``PATH`` and ``HOME`` unless the route overrides them); its stderr goes to the
log line by line; when it dies every pending request fails with
``UpstreamUnavailable`` and it is restarted after ``restart_backoff_s``
(doubling up to 30 s while it keeps dying); ``stop()`` terminates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bastion.errors import ListenerOverflow, UpstreamError, UpstreamUnavailable

__all__ = ["HANDSHAKE_VERSION", "SUBSCRIPTION_DEPTH", "ServerRequestHandler", "StdioServer", "Subscription"]

logger = logging.getLogger(__name__)

HANDSHAKE_VERSION = "2025-11-25"
"""The protocol version Bastion offers a stdio server in ``initialize``."""

_LINE_LIMIT = 16 * 1024 * 1024
_INIT_TIMEOUT_S = 30.0

NotificationHandler = Callable[[dict[str, Any]], None]
ServerRequestHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Relays a server-to-client request to the client whose call caused it; returns the client's
response message (``result`` or ``error``)."""

SUBSCRIPTION_DEPTH = 256
"""How many broadcast notifications a listener may fall behind before its stream is ended."""


class Subscription:
    """One listener's share of a stdio server's broadcast notifications.

    ``next()`` returns them in order. A listener that falls ``SUBSCRIPTION_DEPTH``
    notifications behind is not silently skipped: it is ``overflowed`` and ``next()``
    raises ``ListenerOverflow`` (an ``UpstreamError``) once the queued ones are read, so
    its stream ends with an error the client sees (and the outcome record says,
    ``listener_overflow``), and the client reconnects.
    """

    __slots__ = ("_queue", "overflowed")

    def __init__(self, depth: int = SUBSCRIPTION_DEPTH) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=depth + 1)
        self.overflowed = False

    def offer(self, message: dict[str, Any]) -> bool:
        """Queue ``message``; False (and ``overflowed``) when the listener is too far behind."""
        if self._queue.qsize() >= self._queue.maxsize - 1:
            self.overflowed = True
            self._queue.put_nowait(None)  # the one slot kept free wakes the reader
            return False
        self._queue.put_nowait(message)
        return True

    async def next(self) -> dict[str, Any]:
        """The next notification; raises ``ListenerOverflow`` after an overflow."""
        message = await self._queue.get()
        if message is None:
            raise ListenerOverflow(f"the listener fell more than {self._queue.maxsize - 1} notifications behind")
        return message


class StdioServer:
    """One supervised MCP server process for the route ``name``.

    ``command``/``args`` start it with environment ``env`` (already resolved,
    secrets included) in ``cwd``. Use ``await start()`` once and
    ``await stop()`` on shutdown; ``request`` waits for the process to be ready.
    """

    def __init__(
        self,
        name: str,
        command: str,
        args: tuple[str, ...] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        restart_backoff_s: float = 1.0,
    ) -> None:
        self.name = name
        self._argv = (command, *args)
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
        self._env = {**base, **(env or {})}
        self._cwd = cwd
        self._backoff = restart_backoff_s
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._progress: dict[str, tuple[Any, NotificationHandler]] = {}
        self._requesters: dict[int, ServerRequestHandler] = {}
        self._relays: set[asyncio.Task[None]] = set()
        self._listeners: set[Subscription] = set()
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._exited = asyncio.Event()  # set whenever a start fails or the process exits (start(strict=True))
        self._last_error = "it exited"
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self.initialize_result: dict[str, Any] = {}
        self.on_list_changed: Callable[[str], None] | None = None

    @property
    def pid(self) -> int | None:
        """The running process id, or ``None``."""
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    async def start(self, *, wait: bool = True, strict: bool = False) -> None:
        """Start supervising; with ``wait`` return once the first handshake is done.

        Raises ``UpstreamUnavailable`` when the first start fails within 30 s; with ``strict`` as soon
        as the first attempt fails (a missing command, an exit before the handshake), saying why. The
        supervisor keeps restarting either way until ``stop``.
        """
        self._supervisor = asyncio.create_task(self._supervise(), name=f"stdio:{self.name}")
        if not wait:
            return
        waits = [asyncio.ensure_future(self._ready.wait())]
        if strict:
            waits.append(asyncio.ensure_future(self._exited.wait()))
        try:
            await asyncio.wait(waits, timeout=_INIT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for each in waits:
                each.cancel()
        if not self._ready.is_set():
            why = self._last_error if self._exited.is_set() else "no handshake within 30 s"
            raise UpstreamUnavailable(f"stdio upstream {self.name!r} did not become ready: {why}")

    async def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s) and stop restarting it."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()

    @property
    def listeners(self) -> int:
        """How many event streams currently receive this server's broadcast notifications."""
        return len(self._listeners)

    def subscribe(self) -> Subscription:
        """A subscription to the server's broadcast notifications (list changes, log messages)."""
        subscription = Subscription()
        self._listeners.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription``."""
        self._listeners.discard(subscription)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = 300.0,
        on_progress: NotificationHandler | None = None,
        on_request: ServerRequestHandler | None = None,
    ) -> dict[str, Any]:
        """Send a request and return the JSON-RPC response message (``result`` or ``error``).

        A ``_meta.progressToken`` in ``params`` is replaced by Bastion's own and
        progress notifications for it are passed to ``on_progress`` with the
        caller's token restored. A server-to-client request (sampling, elicitation,
        roots) that the server sends while this is the only request in flight goes
        to ``on_request``, whose answer is written back (stdio carries no "related
        request": with several requests in flight the server gets an error instead,
        never another caller's client). Raises ``UpstreamUnavailable`` if the process
        is down or dies, ``UpstreamError`` on timeout.
        """
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), _INIT_TIMEOUT_S)
            except TimeoutError as exc:
                raise UpstreamUnavailable(f"stdio upstream {self.name!r} is not running") from exc
        return await self._call(method, dict(params or {}), timeout_s, on_progress, on_request)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification (no answer expected)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            message["params"] = dict(params)
        await self._write(message)

    async def _call(
        self,
        method: str,
        params: dict[str, Any],
        timeout_s: float,
        on_progress: NotificationHandler | None,
        on_request: ServerRequestHandler | None = None,
    ) -> dict[str, Any]:
        rpc_id = next(self._ids)
        if on_request is not None:
            self._requesters[rpc_id] = on_request
        token_key: str | None = None
        meta = params.get("_meta")
        if isinstance(meta, dict) and "progressToken" in meta:
            token_key = f"b{rpc_id}"
            if on_progress is not None:
                self._progress[token_key] = (meta["progressToken"], on_progress)
            params = {**params, "_meta": {**meta, "progressToken": token_key}}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rpc_id] = future
        try:
            await self._write({"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params})
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            with contextlib.suppress(UpstreamError):
                await self.notify("notifications/cancelled", {"requestId": rpc_id, "reason": "timeout"})
            raise UpstreamError(f"stdio upstream {self.name!r} did not answer {method} in {timeout_s}s") from exc
        finally:
            self._pending.pop(rpc_id, None)
            self._requesters.pop(rpc_id, None)
            if token_key is not None:
                self._progress.pop(token_key, None)

    async def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise UpstreamUnavailable(f"stdio upstream {self.name!r} is not running")
        try:
            proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise UpstreamUnavailable(f"stdio upstream {self.name!r} closed its input") from exc

    async def _supervise(self) -> None:
        delay = self._backoff
        while not self._stopping:
            started = asyncio.get_running_loop().time()
            try:
                await self._run_once()
            except (OSError, UpstreamError) as exc:
                logger.error("stdio upstream %s failed: %s", self.name, exc)
                self._last_error = str(exc)
            self._ready.clear()
            self._exited.set()
            self._fail_pending(UpstreamUnavailable(f"stdio upstream {self.name!r} exited"))
            if self._stopping:
                return
            ran_for = asyncio.get_running_loop().time() - started
            delay = self._backoff if ran_for > 30 else min(delay * 2, 30.0)
            logger.warning("stdio upstream %s exited; restarting in %.1fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            cwd=self._cwd,
            limit=_LINE_LIMIT,
            start_new_session=True,
        )
        logger.info("stdio upstream %s started (pid %s)", self.name, self._proc.pid)
        if self._proc.stdout is None or self._proc.stderr is None:
            raise UpstreamError("stdio pipes were not created")
        readers = [
            asyncio.create_task(self._read_stdout(self._proc.stdout)),
            asyncio.create_task(self._read_stderr(self._proc.stderr)),
        ]
        try:
            response = await self._call(
                "initialize",
                {
                    "protocolVersion": HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "bastion", "version": "0.1.0"},
                },
                _INIT_TIMEOUT_S,
                None,
            )
            if "result" not in response:
                raise UpstreamError(f"initialize failed: {response.get('error')}")
            self.initialize_result = response["result"]
            await self.notify("notifications/initialized")
            self._ready.set()
            await self._proc.wait()
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await self._terminate()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                logger.error("stdio upstream %s sent a line over %d bytes; dropped", self.name, _LINE_LIMIT)
                continue
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                logger.warning("stdio upstream %s wrote non-JSON to stdout: %.200r", self.name, line)
                continue
            if isinstance(message, dict):
                await self._dispatch(message)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        log = logging.getLogger(f"bastion.upstream.{self.name}")
        while line := await stream.readline():
            log.info("%s", line.decode("utf-8", "replace").rstrip())

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(message)
            return
        method = message["method"]
        if "id" in message:
            await self._answer_server_request(message)
            return
        if method == "notifications/progress":
            params = message.get("params") or {}
            entry = self._progress.get(str(params.get("progressToken")))
            if entry is not None:
                original, handler = entry
                handler({**message, "params": {**params, "progressToken": original}})
            return
        if method.endswith("/list_changed") and self.on_list_changed is not None:
            self.on_list_changed(method)
        for subscription in list(self._listeners):
            if not subscription.offer(message):
                self._listeners.discard(subscription)
                logger.warning("stdio upstream %s: a listener fell %d notifications behind; its stream ends",
                               self.name, SUBSCRIPTION_DEPTH)  # fmt: skip

    async def _answer_server_request(self, message: dict[str, Any]) -> None:
        """Answer ``ping``; relay any other server-to-client request to the one caller in flight."""
        if message["method"] == "ping":
            await self._reply(message, {"result": {}})
            return
        handlers = [self._requesters[rid] for rid in self._pending if rid in self._requesters]
        if len(self._pending) != 1 or len(handlers) != 1:
            reason = "no client call is in flight" if not self._pending else f"{len(self._pending)} calls are in flight"
            text = f"{message['method']} cannot be relayed through Bastion: {reason}"
            await self._reply(message, {"error": {"code": -32603, "message": text}})
            return
        task = asyncio.create_task(self._relay(handlers[0], message))
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _relay(self, handler: ServerRequestHandler, message: dict[str, Any]) -> None:
        try:
            answer = await handler(message)
        except Exception:
            logger.exception("stdio upstream %s: relaying %s failed", self.name, message["method"])
            answer = {"error": {"code": -32603, "message": "Internal error while relaying the request"}}
        await self._reply(message, answer)

    async def _reply(self, request: dict[str, Any], answer: Mapping[str, Any]) -> None:
        """Write the response to the server's ``request``: ``answer``'s ``result`` or ``error``."""
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if "error" in answer:
            reply["error"] = answer["error"]
        else:
            reply["result"] = answer.get("result", {})
        with contextlib.suppress(UpstreamError):
            await self._write(reply)

    def _fail_pending(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
