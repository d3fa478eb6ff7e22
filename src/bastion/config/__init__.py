"""Bastion's configuration: one YAML file, validated once at start.

``load_config(path)`` reads the file, validates it with the pydantic models
below and checks what pydantic cannot (files exist, secrets are references,
route names and paths are unique). Every failure is a ``ConfigError`` whose
message names the file and the dotted key, e.g.
``bastion.yaml: routes.0.upstream.url: Input should be a valid URL``.

Secrets are never written inline: an upstream environment variable or header
whose name looks like a secret must be a reference, ``{env: NAME}`` or
``{file: PATH}``, resolved at run time (``SecretRef.resolve``).
"""

from bastion.config.loading import load_config, parse_config
from bastion.config.routes import EnvValue, HttpUpstream, RouteSettings, SecretRef, StdioUpstream
from bastion.config.settings import AuditSettings, BastionConfig, IdentitySettings, PolicySettings, ServerSettings

__all__ = [
    "AuditSettings",
    "BastionConfig",
    "EnvValue",
    "HttpUpstream",
    "IdentitySettings",
    "PolicySettings",
    "RouteSettings",
    "SecretRef",
    "ServerSettings",
    "StdioUpstream",
    "load_config",
    "parse_config",
]
