"""Reading and validating the configuration file (``bastion check``, start-up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bastion.config.routes import EnvValue, RouteSettings, SecretRef
from bastion.config.settings import BastionConfig
from bastion.errors import ConfigError

__all__ = ["load_config", "parse_config"]

M = TypeVar("M", bound=BaseModel)


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        place = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {place}: {err['msg']}")
    return "\n".join(lines)


def _resolve_paths(config: BastionConfig, base: Path) -> BastionConfig:
    def fix(path: Path) -> Path:
        return path if path.is_absolute() else (base / path)

    def fix_values(values: dict[str, EnvValue]) -> dict[str, EnvValue]:
        return {
            k: v.model_copy(update={"file": fix(v.file)}) if isinstance(v, SecretRef) and v.file else v
            for k, v in values.items()
        }

    def fix_route(route: RouteSettings) -> RouteSettings:
        if route.stdio is not None:
            stdio = route.stdio.model_copy(
                update={"cwd": fix(route.stdio.cwd) if route.stdio.cwd else None, "env": fix_values(route.stdio.env)}
            )
            return route.model_copy(update={"stdio": stdio})
        if route.http is not None:
            http = route.http.model_copy(update={"headers": fix_values(route.http.headers)})
            return route.model_copy(update={"http": http})
        return route

    policy = config.policy.model_copy(
        update={
            "files": tuple(fix(p) for p in config.policy.files),
            "shadow_files": tuple(fix(p) for p in config.policy.shadow_files),
            "schema_file": fix(config.policy.schema_file) if config.policy.schema_file else None,
        }
    )
    server = config.identity.authorization_server
    users_file = fix(server.users_file) if server.users_file else None

    def fix_secret(item: M) -> M:
        secret = getattr(item, "client_secret", None)
        if secret is None or secret.file is None:
            return item
        return item.model_copy(update={"client_secret": secret.model_copy(update={"file": fix(secret.file)})})

    server = server.model_copy(
        update={
            "users_file": users_file,
            "clients": tuple(fix_secret(c) for c in server.clients),
            "identity_providers": tuple(fix_secret(p) for p in server.identity_providers),
        }
    )
    keys = fix(config.identity.signing_keys_file) if config.identity.signing_keys_file else None
    egress = config.egress.model_copy(update={"ca_file": fix(config.egress.ca_file) if config.egress.ca_file else None})
    checkpoints = config.audit.checkpoints
    if checkpoints.file is not None:
        checkpoints = checkpoints.model_copy(update={"file": fix(checkpoints.file)})
    exports = tuple(  # audit.export: a file sink's path, a ca_file
        e.model_copy(update={k: fix(getattr(e, k)) for k in ("path", "ca_file") if getattr(e, k, None) is not None})
        for e in config.audit.export
    )
    return config.model_copy(
        update={
            "audit": config.audit.model_copy(update={"checkpoints": checkpoints, "export": exports}),
            "data_dir": fix(config.data_dir),
            "policy": policy,
            "routes": tuple(fix_route(r) for r in config.routes),
            "identity": config.identity.model_copy(update={"authorization_server": server, "signing_keys_file": keys}),
            "egress": egress,
        }
    )


def _check_files(config: BastionConfig, source: str) -> None:
    for index, path in enumerate(config.policy.files):
        if not path.exists():
            raise ConfigError(f"{source}: policy.files.{index}: {path} does not exist")
    if config.policy.schema_file and not config.policy.schema_file.is_file():
        raise ConfigError(f"{source}: policy.schema: {config.policy.schema_file} is not a readable file")
    users_file = config.identity.authorization_server.users_file
    if users_file is not None and not users_file.is_file():
        raise ConfigError(f"{source}: identity.authorization_server.users_file: {users_file} is not a readable file")
    if config.egress.ca_file is not None and not config.egress.ca_file.is_file():
        raise ConfigError(f"{source}: egress.ca_file: {config.egress.ca_file} is not a readable file")
    for index, route in enumerate(config.routes):
        if route.stdio and route.stdio.cwd and not route.stdio.cwd.is_dir():
            raise ConfigError(f"{source}: routes.{index}.stdio.cwd: {route.stdio.cwd} is not a directory")


def parse_config(data: Any, *, source: str = "<config>", base_dir: Path | None = None) -> BastionConfig:
    """Validate an already-parsed YAML document. Relative paths are resolved against ``base_dir``.

    Raises ``ConfigError`` naming ``source`` and the failing key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping at the top level")
    try:
        config = BastionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from exc
    config = _resolve_paths(config, base_dir or Path.cwd())
    _check_files(config, source)
    return config


def load_config(path: Path) -> BastionConfig:
    """Read and validate the YAML file at ``path``. Raises ``ConfigError`` with the place of the error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    return parse_config(data, source=str(path), base_dir=path.parent.resolve())
