"""Bastion: a zero-trust gateway for the Model Context Protocol.

The public API for embedding Bastion (the CLI is ``bastion``)::

    config = load_config(Path("bastion.yaml"))   # raises ConfigError naming the place
    gateway = Gateway(config)                     # gateway.app is the ASGI application

Everything else lives in private implementation modules; the subpackages
``identity``, ``policy`` and ``audit`` have public APIs of their own.

``Gateway`` is imported when first used (PEP 562 ``__getattr__``): it pulls in every stage, store
backend, metrics and tracing, which the ``bastion`` CLI commands that only read or write a store
(``approvals``, ``token``, ``audit``, ...) do not need, and would otherwise load on every run.
"""

from typing import TYPE_CHECKING, Any

from bastion.config import BastionConfig, load_config, parse_config
from bastion.errors import (
    AuditUnavailable,
    AuthenticationError,
    BastionError,
    ConfigError,
    PolicyDenied,
    SessionNotFound,
    TransportError,
    UpstreamError,
)
from bastion.principal import Principal

if TYPE_CHECKING:
    from bastion.gateway import Gateway

__all__ = [
    "AuditUnavailable",
    "AuthenticationError",
    "BastionConfig",
    "BastionError",
    "ConfigError",
    "Gateway",
    "PolicyDenied",
    "Principal",
    "SessionNotFound",
    "TransportError",
    "UpstreamError",
    "load_config",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    """``Gateway`` on first use (the module docstring); ``AttributeError`` for any other missing name."""
    if name == "Gateway":
        from bastion.gateway import Gateway

        return Gateway
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")
