"""The audit exporters a configuration asks for (``audit.export``), one per destination.

Each has its own cursor, so a destination that is down holds back only itself. On the embedded log
the source is ``LocalSource`` (``SQLiteAuditReader``, a cursor file in the data directory); with
``stores.postgres`` it is ``PostgresSource`` (the shared log, a cursor row per destination that
one replica at a time holds), so every replica runs the exporters and exactly one exports each
batch; a ``file`` destination is refused there (its lines would be split across the machines).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from bastion.audit.export import Exporter, ExportSource, Sink
from bastion.audit.export_feed import ExportCursor, LocalSource, ReaderFeed
from bastion.audit.export_file import FileSink
from bastion.audit.export_otlp import OtlpSink
from bastion.audit.export_postgres import PostgresSource
from bastion.audit.export_syslog import SyslogSink
from bastion.audit.query import SQLiteAuditReader
from bastion.config import BastionConfig
from bastion.config.base import SecretRef
from bastion.config.export import FileExport, OtlpExport, SyslogExport
from bastion.errors import ConfigError
from bastion.stores.postgres import PostgresDatabase

__all__ = ["build_exporters"]


def build_exporters(
    config: BastionConfig, database: Path, postgres: PostgresDatabase | None = None, *, poll_s: float = 0.5
) -> list[Exporter]:
    """An ``Exporter`` per ``audit.export`` entry: following the shared log in ``postgres`` when given,
    else the SQLite log at ``database`` with cursors in ``config.data_dir``. Raises ``ConfigError`` for
    an unreadable cursor file or CA bundle, a header reference that does not resolve, or a ``file``
    destination on the shared log."""
    exporters = []
    for index, export in enumerate(config.audit.export):
        name = export.sink_name
        source: ExportSource
        if postgres is not None:
            if isinstance(export, FileExport):
                raise ConfigError(
                    f"audit.export.{index}: a file destination with stores.postgres would be split across the "
                    "replicas' machines (each writes the batches it exported); use syslog or otlp"
                )
            source = PostgresSource(postgres, name)
        else:
            try:
                cursor = ExportCursor.load(config.data_dir, name)
            except ValueError as exc:
                raise ConfigError(f"audit.export.{index}: {exc}") from None
            source = LocalSource(ReaderFeed(SQLiteAuditReader(database)), cursor)
        try:
            sink = _sink(export, f"audit.export.{index}")
        except (OSError, ssl.SSLError) as exc:  # the CA bundle
            raise ConfigError(f"audit.export.{index}.ca_file: {exc}") from None
        exporters.append(Exporter(name, source, sink, batch=export.batch, poll_s=poll_s))
    return exporters


def _sink(export: FileExport | SyslogExport | OtlpExport, where: str) -> Sink:
    if isinstance(export, FileExport):
        return FileSink(export.path, max_bytes=export.max_bytes, keep=export.keep)
    if isinstance(export, SyslogExport):
        return SyslogSink(export.host, export.port, tls=export.tls, ca_file=export.ca_file, facility=export.facility,
                          app_name=export.app_name, sd_id=export.sd_id)  # fmt: skip
    headers = {}
    for key, value in export.headers.items():
        try:
            headers[key] = value.resolve() if isinstance(value, SecretRef) else value
        except ConfigError as exc:
            raise ConfigError(f"{where}.headers.{key}: {exc.message}") from None
    return OtlpSink(export.endpoint, headers=headers, ca_file=export.ca_file, timeout_s=export.timeout_s)
