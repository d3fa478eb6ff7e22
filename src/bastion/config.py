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

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.errors import ConfigError
from bastion.identity.durations import parse_duration
from bastion.identity.external import ExternalIssuer

__all__ = [
    "AuditSettings",
    "BastionConfig",
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

_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth)",
    re.IGNORECASE,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Duration = Annotated[int, Field(ge=1)]


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
    return value


class SecretRef(_Model):
    """A reference to a secret resolved at run time: exactly one of ``env`` or ``file``."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference needs exactly one of 'env' or 'file'")
        return self

    def resolve(self) -> str:
        """Return the secret's value. Raises ``ConfigError`` when it is not set or not readable."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set")
            return value
        if self.file is None:
            raise ConfigError("a secret reference needs 'env' or 'file'")
        try:
            return self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"secret file {self.file} cannot be read: {exc.strerror}") from exc


EnvValue = str | SecretRef


def _check_inline_secrets(values: dict[str, EnvValue], what: str) -> dict[str, EnvValue]:
    for name, value in values.items():
        if isinstance(value, str) and _SECRET_NAME.search(name) and value:
            raise ValueError(
                f"{what} {name!r} looks like a secret written inline; "
                "use a reference such as {env: NAME} or {file: PATH}"
            )
    return values


class StdioUpstream(_Model):
    """An MCP server that Bastion starts and owns, speaking MCP over stdio.

    ``env`` is the whole environment of the process (scrubbed: nothing else of
    Bastion's environment is passed, except ``PATH`` and ``HOME`` unless
    overridden); values are literals or secret references.
    """

    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, EnvValue] = Field(default_factory=dict)
    cwd: Path | None = None
    restart_backoff_s: float = Field(default=1.0, gt=0, le=60)

    @field_validator("env")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, EnvValue]) -> dict[str, EnvValue]:
        return _check_inline_secrets(value, "environment variable")


class HttpUpstream(_Model):
    """An MCP server reached over Streamable HTTP at ``url``.

    ``headers`` are added to every upstream request (values literal or
    references); the client's ``Authorization`` header is never forwarded.
    """

    url: str
    headers: dict[str, EnvValue] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("headers")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, EnvValue]) -> dict[str, EnvValue]:
        return _check_inline_secrets(value, "header")


class RouteSettings(_Model):
    """One route: a name, a public path and exactly one upstream."""

    name: str
    path: str | None = None
    title: str | None = None
    stdio: StdioUpstream | None = None
    http: HttpUpstream | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.match(value):
            raise ValueError("route names are 1-63 lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or value.endswith("/") or "//" in value):
            raise ValueError("a route path starts with '/' and does not end with '/'")
        if value is not None and value.startswith("/.well-known"):
            raise ValueError("a route path may not be under /.well-known")
        return value

    @model_validator(mode="after")
    def _one_upstream(self) -> RouteSettings:
        if (self.stdio is None) == (self.http is None):
            raise ValueError("a route needs exactly one upstream: 'stdio' or 'http'")
        return self

    @property
    def public_path(self) -> str:
        """The path clients use, ``/mcp/<name>`` unless ``path`` is set."""
        return self.path or f"/mcp/{self.name}"


class ServerSettings(_Model):
    """Where Bastion listens and how it names itself.

    ``public_url`` is the origin clients use (resource URIs and metadata are
    built from it). ``allowed_origins``/``allowed_hosts`` guard against DNS
    rebinding (MCP basic/transports, security warning); when empty they are
    derived from ``public_url`` and the loopback names of the listening port.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    session_idle_s: Annotated[int, Field(ge=1)] = 3600

    _parse_idle = field_validator("session_idle_s", mode="before")(_duration)

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, or ``http://host:port``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class IdentitySettings(_Model):
    """Token issuing and verification settings (RFC 9068 access tokens)."""

    issuer: str | None = None
    max_token_ttl: Duration = 3600
    default_token_ttl: Duration = 900
    leeway_s: int = Field(default=30, ge=0, le=300)
    external_issuers: tuple[ExternalIssuer, ...] = ()

    _parse_ttls = field_validator("max_token_ttl", "default_token_ttl", mode="before")(_duration)

    @model_validator(mode="after")
    def _ttls(self) -> IdentitySettings:
        if self.default_token_ttl > self.max_token_ttl:
            raise ValueError("default_token_ttl exceeds max_token_ttl")
        if self.max_token_ttl > 24 * 3600:
            raise ValueError("max_token_ttl above 24h is refused: access tokens are short-lived")
        return self


class PolicySettings(_Model):
    """Cedar policy files (or directories of ``.cedar`` files) and an optional schema."""

    files: tuple[Path, ...] = Field(min_length=1)
    schema_file: Path | None = Field(default=None, alias="schema")


class AuditSettings(_Model):
    """Audit log settings; the log lives in ``<data_dir>/bastion.db``.

    ``synchronous`` is SQLite's setting for the log's commits: ``full`` (the
    default) fsyncs the write-ahead log at every commit, so a record committed
    before a call was forwarded survives a power loss; ``normal`` survives a
    crash of Bastion but not of the machine, and saves the fsync (about 0.3 ms
    of latency and 0.1 ms of CPU per call on the benchmark machine).
    """

    store_arguments: bool = True
    synchronous: Literal["full", "normal"] = "full"


class BastionConfig(_Model):
    """The whole configuration file."""

    data_dir: Path = Path(".bastion")
    server: ServerSettings = ServerSettings()
    identity: IdentitySettings = IdentitySettings()
    policy: PolicySettings
    audit: AuditSettings = AuditSettings()
    routes: tuple[RouteSettings, ...]

    @field_validator("routes")
    @classmethod
    def _some_routes(cls, value: tuple[RouteSettings, ...]) -> tuple[RouteSettings, ...]:
        # An "after" validator: it runs only when every route is valid, so one bad route
        # gives one error line, not also a misleading "too few routes".
        if not value:
            raise ValueError("at least one route is needed")
        return value

    @model_validator(mode="after")
    def _unique_routes(self) -> BastionConfig:
        names = [r.name for r in self.routes]
        paths = [r.public_path for r in self.routes]
        for label, values in (("name", names), ("path", paths)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"route {label}s must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def issuer(self) -> str:
        """The ``iss`` of tokens Bastion mints (defaults to the public base URL)."""
        return (self.identity.issuer or self.server.base_url).rstrip("/")

    def route(self, name: str) -> RouteSettings:
        """The route called ``name``. Raises ``ConfigError`` when there is none."""
        for route in self.routes:
            if route.name == name:
                return route
        raise ConfigError(f"no route named {name!r}; routes: {', '.join(r.name for r in self.routes)}")

    def resource_uri(self, route: RouteSettings) -> str:
        """The route's resource URI (RFC 8707 section 2, RFC 9728 ``resource``): base URL + path."""
        return self.server.base_url + route.public_path


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
            "schema_file": fix(config.policy.schema_file) if config.policy.schema_file else None,
        }
    )
    return config.model_copy(
        update={
            "data_dir": fix(config.data_dir),
            "policy": policy,
            "routes": tuple(fix_route(r) for r in config.routes),
        }
    )


def _check_files(config: BastionConfig, source: str) -> None:
    for index, path in enumerate(config.policy.files):
        if not path.exists():
            raise ConfigError(f"{source}: policy.files.{index}: {path} does not exist")
    if config.policy.schema_file and not config.policy.schema_file.is_file():
        raise ConfigError(f"{source}: policy.schema: {config.policy.schema_file} is not a readable file")
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
