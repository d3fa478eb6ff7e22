"""Routes and their upstreams in the configuration, and secret references.

Secrets are never written inline: an upstream environment variable or header
whose name looks like a secret must be a reference, ``{env: NAME}`` or
``{file: PATH}``, resolved at run time (``SecretRef.resolve``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import AllowEntries, SecretRef, _Model
from bastion.config.credentials import RouteCredentials
from bastion.config.definitions import DefinitionSettings
from bastion.config.limits import SessionCaps
from bastion.config.results import ResultSettings
from bastion.egress.target import parse_target, shown_url
from bastion.errors import EgressDenied

__all__ = [
    "EnvValue",
    "HttpUpstream",
    "ResultVolumeMode",
    "RouteSettings",
    "SecretRef",
    "StdioUpstream",
    "ToolSettings",
]

_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth)",
    re.IGNORECASE,
)


EnvValue = str | SecretRef


_CONNECTION_FIELDS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
     "proxy-connection"}
)  # fmt: skip
"""Header fields of the connection and the message framing (RFC 9110 sections 7.2, 7.6.1, 8.6;
RFC 9112 section 6.1): the upstream client writes them itself, so a route cannot set them."""


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
    references; not the connection's or the framing's own fields, such as ``Host``,
    ``Content-Length`` or ``Transfer-Encoding``); the client's ``Authorization`` header is
    never forwarded.
    Every connection to the upstream passes the egress guard: https only, unless
    ``allow_http`` admits plain http for this route; an upstream whose address is
    loopback, private, link-local, CGNAT, a metadata endpoint or otherwise not public
    (in any spelling, or a name resolving there) is refused unless ``allow`` (CIDRs
    or ``host[:port]``, as ``egress.allow``) or the global ``egress.allow`` lists it.
    """

    url: str
    headers: dict[str, EnvValue] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    allow: AllowEntries = ()
    allow_http: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parse_target(value, allow_http=True)
        except EgressDenied as exc:
            raise ValueError(f"must be an http:// or https:// URL with a host ({exc.message})") from None
        return value

    @field_validator("headers")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, EnvValue]) -> dict[str, EnvValue]:
        framing = sorted(name for name in value if name.lower() in _CONNECTION_FIELDS)
        if framing:
            raise ValueError(
                f"header {framing[0]!r} is the connection's own (the upstream client writes it); a route cannot set it"
            )
        return _check_inline_secrets(value, "header")

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> HttpUpstream:
        if urlsplit(self.url).scheme == "http" and not self.allow_http:
            raise ValueError(
                f"upstream {shown_url(self.url)} is plain http: upstreams are https only "
                "unless the route sets 'allow_http: true'"
            )
        return self


class UrlArgumentSettings(_Model):
    """Tool arguments that hold URLs, checked by the egress guard before a call is forwarded.

    ``names`` are top-level argument names; with ``format_uri`` every top-level argument
    whose JSON Schema (the tool's ``inputSchema``) says ``"format": "uri"`` is checked too.
    A value (a string, or each string of a list) must be an http(s) URL (plain http only
    with ``allow_http``) whose host is not loopback, private, link-local, CGNAT, multicast,
    reserved or a metadata address in any encoding, unless ``allow`` (CIDRs or
    ``host[:port]``) lists it for this route. The upstream resolves the name again when it
    fetches, so this stops literal and resolving addresses, not DNS rebinding by the upstream.
    """

    names: tuple[str, ...] = ()
    format_uri: bool = False
    allow: AllowEntries = ()
    allow_http: bool = True


Label = Annotated[str, Field(min_length=1, max_length=256)]

ResultVolumeMode = Literal["flag", "withhold", "off"]
"""What becomes of a tool result far above its tool's usual volume (``bastion.pipeline.stages.volume``)."""


class ToolSettings(_Model):
    """What the configuration says about one of the route's tools (its entry in ``tools:``).

    It overrides or completes what the upstream says: ``risk`` (``read``, ``write`` or
    ``destructive``) always wins over the tool's annotations; ``owner`` and ``classification``
    (free strings, e.g. ``public`` / ``internal`` / ``confidential`` / ``restricted``) and
    ``labels`` (free strings) are what Cedar sees as ``resource.owner``,
    ``resource.classification`` and ``resource.labels`` (``bastion.policy.inventory``).
    The labels also mark the caller's data flow: Cedar sees the labels of every tool a caller
    touched as ``context.session_labels`` (``data_flow:``, ``bastion.limits.activity``).

    ``record_arguments`` names the tool's top-level arguments that say how many records a call
    asks for (``limit``, ``page_size``, ``count``...); Cedar sees the largest integer among them
    as ``context.records`` (0 when none is given) and ``context.bulk`` is true when that is more
    than ``max_records``, so a policy can deny a bulk read or ask for its approval.
    """

    risk: Literal["read", "write", "destructive"] | None = None
    owner: str | None = Field(default=None, min_length=1)
    classification: str | None = Field(default=None, min_length=1)
    labels: tuple[Label, ...] = ()
    record_arguments: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    max_records: int | None = Field(default=None, ge=0)
    result_volume: ResultVolumeMode | None = None  # overrides the route's (RouteSettings)

    @model_validator(mode="after")
    def _records(self) -> ToolSettings:
        if self.max_records is not None and not self.record_arguments:
            raise ValueError(
                "max_records needs record_arguments: the arguments that say how many records are asked for"
            )
        return self


class RouteSettings(_Model):
    """One route: a name, a public path, exactly one upstream, the URL arguments to guard, and
    the upstream credential each user's calls carry (``credentials``, HTTP upstreams only).

    ``strict_arguments`` makes ``additionalProperties: false`` the default of every tool's
    arguments (``bastion.pipeline.stages.validate``). ``denials`` is how a call the policy
    denies reaches the client: ``jsonrpc`` (a JSON-RPC error, -32003 with the deciding policy
    ids in ``data``) or ``tool_error`` (a tool execution error, ``isError: true``, with the same
    text and ids in ``structuredContent``, which hosts show the model).

    ``tools`` is the route's tool inventory, by tool name (``ToolSettings``). The MCP tool
    annotations are hints from the server: they decide a tool's risk only when
    ``trust_annotations`` is true; otherwise a tool with no configured risk is
    ``destructive`` (fail closed). ``session_caps`` replaces the top-level ``session_caps`` on
    this route (``bastion.config.limits.SessionCaps``).

    ``result_volume`` is the route's policy for tool results far above their tool's usual volume
    (``volume:``, ``bastion.config.volume``): ``flag`` (relayed; the outcome record is flagged
    ``volume_anomaly`` with the measures), ``withhold`` (the client gets a tool error instead; the
    result is recorded by its digest only) or ``off`` (not measured). A tool's own
    ``tools.<name>.result_volume`` wins over it.

    ``definitions`` pins the route's definitions and says what a scanner finding does
    (``bastion.config.definitions.DefinitionSettings``: ``pin``, ``pinned``, ``on_finding``).

    ``results`` says what is redacted from the route's results and what becomes of instructions
    aimed at the model found in them (``bastion.config.results.ResultSettings``: ``redact``,
    ``injection``).
    """

    name: str
    path: str | None = None
    title: str | None = None
    stdio: StdioUpstream | None = None
    http: HttpUpstream | None = None
    url_arguments: UrlArgumentSettings | None = None
    credentials: RouteCredentials | None = None
    strict_arguments: bool = False
    denials: Literal["jsonrpc", "tool_error"] = "jsonrpc"
    tools: dict[Annotated[str, Field(min_length=1)], ToolSettings] = Field(default_factory=dict)
    trust_annotations: bool = False
    session_caps: SessionCaps | None = None
    result_volume: ResultVolumeMode = "flag"
    definitions: DefinitionSettings = Field(default_factory=DefinitionSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)

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
        if self.credentials is not None and self.http is None:
            raise ValueError("per-user upstream credentials need an 'http' upstream")
        if self.credentials is not None and self.http is not None:
            for name in self.http.headers:
                if name.lower() == "authorization":
                    raise ValueError("a route with credentials may not also set an Authorization header")
        return self

    @property
    def public_path(self) -> str:
        """The path clients use, ``/mcp/<name>`` unless ``path`` is set."""
        return self.path or f"/mcp/{self.name}"
