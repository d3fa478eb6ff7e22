"""``bastion serve``: run the gateway under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

import uvicorn

from bastion.cli.workers import REUSE_PORT_ENV
from bastion.config import BastionConfig
from bastion.gateway import Gateway
from bastion.stores.backends import preflight
from bastion.transport.connections import ConnectionLimits, http_protocol
from bastion.transport.drain import SERVER_MARGIN_S

__all__ = ["GatewayServer", "override_listener", "reuse_port_socket", "run_server", "uvicorn_config"]


class GatewayServer(uvicorn.Server):
    """uvicorn's server, telling the gateway when shutdown begins (``Drain.begin``).

    Long-lived event streams (a session's GET stream) end at once; calls in flight get
    ``server.drain_s`` seconds to finish (``bastion.transport.drain``), within uvicorn's own
    graceful timeout.
    """

    def __init__(self, gateway: Gateway, log_level: str = "info", *, reload_on_sighup: bool = False) -> None:
        super().__init__(uvicorn_config(gateway, log_level))
        self._gateway = gateway
        self._drain = gateway.drain
        self._reload_on_sighup = reload_on_sighup
        self._reloads: set[asyncio.Task[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start; then SIGHUP reloads the policy sets and the routes (``reload_on_sighup``)."""
        await super().startup(sockets)
        if self._reload_on_sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._sighup)

    def _sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._gateway.reload_policies("sighup"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's periodic check (every 0.1 s); begins the drain once an exit was requested."""
        should_exit = await super().on_tick(counter)
        if should_exit:
            self._drain.begin()
        return should_exit


def override_listener(config: BastionConfig, host: str | None, port: int | None) -> BastionConfig:
    """``config`` with ``server.host``/``server.port`` replaced where given."""
    update: dict[str, object] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if not update:
        return config
    return config.model_copy(update={"server": config.server.model_copy(update=update)})


def uvicorn_config(gateway: Gateway, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn settings Bastion runs with (no server header, no access log, graceful stop).

    HTTP/1.1 through ``BastionHttpProtocol`` (header and body deadlines, header
    size limit: ``bastion.transport.connections``); no WebSocket, which no
    endpoint serves. uvicorn answers 503 to a request that arrives while
    ``limit_concurrency`` connections are open, its own included: one more than
    ``server.max_connections`` serves that many.
    """
    server = gateway.config.server
    limits = ConnectionLimits(server.header_timeout_s, server.body_timeout_s, server.max_header_bytes)
    return uvicorn.Config(
        gateway.app,
        host=server.host,
        port=server.port,
        http=http_protocol(limits),
        ws="none",
        limit_concurrency=server.max_connections + 1,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=server.drain_s + SERVER_MARGIN_S,  # a backstop: Drain cuts calls first
        log_config=None,
    )


def run_server(
    config: BastionConfig, *, host: str | None, port: int | None, log_level: str = "info",
    config_path: Path | None = None,
) -> None:  # fmt: skip
    """Check that the shared stores answer, build the gateway (either raises ``ConfigError``) and serve
    until interrupted. With ``config_path`` (the file ``config`` was read from), SIGHUP reloads the
    policy sets and the routes from it (``Gateway.enable_reload``)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config_path is not None:  # a SIGHUP before the reload handler is in place is ignored, not fatal
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    preflight(config)
    gateway = Gateway(override_listener(config, host, port))
    if config_path is not None:
        gateway.enable_reload(config_path, config)
    server = GatewayServer(gateway, log_level, reload_on_sighup=config_path is not None)
    if os.environ.get(REUSE_PORT_ENV):  # one of several workers (bastion.cli.workers): share the port
        server.run(sockets=[reuse_port_socket(gateway.config.server.host, gateway.config.server.port)])
    else:
        server.run()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` with ``SO_REUSEPORT`` (Linux spreads new connections
    over every socket bound so), for one worker of ``bastion serve --workers N``. Raises ``OSError``."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]  # fmt: skip
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
