"""Bastion: a zero-trust gateway for the Model Context Protocol.

The public API for embedding Bastion (the CLI is ``bastion``)::

    config = load_config(Path("bastion.yaml"))   # raises ConfigError naming the place
    gateway = Gateway(config)                     # gateway.app is the ASGI application

Everything else lives in private implementation modules; the subpackages
``identity``, ``policy`` and ``audit`` have public APIs of their own.
"""

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
from bastion.gateway import Gateway
from bastion.principal import Principal

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
