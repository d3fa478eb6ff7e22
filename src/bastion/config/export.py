"""``audit.export``: where committed audit records are sent, each destination at least once.

    audit:
      export:
        - kind: file                     # JSON lines, rotated
          path: /var/log/bastion/audit.jsonl
          max_bytes: 100MB               # rotate past this (100 MB by default)
          keep: 10                       # rotated files kept: audit.jsonl.1 ... .10
        - kind: syslog                   # RFC 5424 over TCP (RFC 6587 octet counting) or TLS (RFC 5425)
          host: logs.internal
          port: 6514
          tls: true
          ca_file: /etc/ssl/logs-ca.pem  # else the system's trust store
          app_name: bastion
          facility: 13                   # log audit (RFC 5424 table 1)
        - kind: otlp                     # OpenTelemetry logs, OTLP/HTTP protobuf
          endpoint: https://otel-collector:4318/v1/logs
          headers: {authorization: {env: OTEL_AUTH}}

Each destination has a ``name`` (default: its ``kind``; two of one kind need names of their own):
its cursor, the ``seq`` of the last record it accepted, is kept under that name, in the data
directory or, with ``stores.postgres``, in the database (``bastion.audit.export``). How it works
and what it guarantees: docs/architecture.md, "Audit export".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import SecretRef, _Model

__all__ = ["ExportSettings", "FileExport", "OtlpExport", "SyslogExport", "check_export_names"]

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _bytes(value: object) -> object:
    """``"100MB"``, ``"64KiB"`` or an int, as bytes; pydantic reports a ``ValueError``."""
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size such as 100MB or 64KiB")
    return int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]


class _Export(_Model):
    kind: str
    name: str | None = Field(default=None, pattern=_NAME)
    batch: int = Field(default=500, ge=1, le=10_000)  # records per send at most

    @property
    def sink_name(self) -> str:
        """The destination's name: ``name``, else its ``kind``."""
        return self.name or self.kind


class FileExport(_Export):
    """``kind: file``: one JSON object (the stored record) per line, appended to ``path`` and fsynced;
    past ``max_bytes`` the file becomes ``path.1`` (and ``.1`` becomes ``.2``, ... up to ``keep``)."""

    kind: Literal["file"]
    path: Path
    max_bytes: int = Field(default=100 * 1000**2, ge=4096)
    keep: int = Field(default=10, ge=0, le=1000)

    _parse_size = field_validator("max_bytes", mode="before")(_bytes)


class SyslogExport(_Export):
    """``kind: syslog``: RFC 5424 messages over TCP, framed by octet counting (RFC 6587 section 3.4.1),
    or over TLS (RFC 5425; ``ca_file`` to trust a private CA, else the system's). ``facility`` is the
    RFC 5424 number (13: log audit; 16-23: local0-local7); ``app_name`` is the APP-NAME field; ``sd_id``
    names the structured data element carrying ``seq`` and ``hash`` (``name@<private enterprise
    number>``; 32473 is the number RFC 5612 reserves for documentation: use your organization's)."""

    kind: Literal["syslog"]
    host: str = Field(min_length=1)
    port: int = Field(default=6514, ge=1, le=65535)
    tls: bool = True
    ca_file: Path | None = None
    app_name: str = Field(default="bastion", pattern=r"^[!-~]{1,48}$")
    facility: int = Field(default=13, ge=0, le=23)
    sd_id: str = Field(default="bastion@32473", pattern=r'^[!#-<>-\\^-~]{1,32}$')  # SD-NAME (RFC 5424 6.3.2)

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> SyslogExport:
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is only used with tls: true")
        return self


class OtlpExport(_Export):
    """``kind: otlp``: OpenTelemetry log records, OTLP/HTTP with protobuf bodies, POSTed to
    ``endpoint`` (the full URL, usually ending ``/v1/logs``); ``headers`` are literal values or
    secret references (an authorization header); ``ca_file`` trusts a private CA for https."""

    kind: Literal["otlp"]
    endpoint: str
    headers: dict[str, str | SecretRef] = Field(default_factory=dict)
    ca_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("the OTLP endpoint must be an http:// or https:// URL (OTLP/HTTP)")
        return value


ExportSettings = Annotated[FileExport | SyslogExport | OtlpExport, Field(discriminator="kind")]
"""One ``audit.export`` entry."""


def check_export_names(exports: tuple[FileExport | SyslogExport | OtlpExport, ...]) -> None:
    """Raise ``ValueError`` unless every destination's name (``sink_name``) is its own."""
    seen: set[str] = set()
    for index, export in enumerate(exports):
        if export.sink_name in seen:
            raise ValueError(f"audit.export.{index}: another destination is already named {export.sink_name!r}; "
                             "give each a name of its own (name: ...)")  # fmt: skip
        seen.add(export.sink_name)
