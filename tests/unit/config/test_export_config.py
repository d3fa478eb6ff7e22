"""``audit.export`` (``bastion.config.export``): the three kinds, their defaults, names, sizes, relative
paths, and the exporters built from them (``bastion.audit.export_setup``), on either log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.audit.export_feed import LocalSource
from bastion.audit.export_file import FileSink
from bastion.audit.export_otlp import OtlpSink
from bastion.audit.export_postgres import PostgresSource
from bastion.audit.export_setup import build_exporters
from bastion.audit.export_syslog import SyslogSink
from bastion.config import parse_config
from bastion.config.export import FileExport, OtlpExport, SyslogExport
from bastion.errors import ConfigError
from bastion.stores.postgres import PostgresDatabase


@pytest.fixture
def base(base: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The shared one-route document (tests/unit/conftest.py) with a data directory of the test's own."""
    return {**base, "data_dir": str(tmp_path / "data")}


def _with(base: dict[str, Any], *exports: dict[str, Any]) -> dict[str, Any]:
    return {**base, "audit": {"export": list(exports)}}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="bastion.yaml")
    return caught.value.message


def test_the_three_kinds_with_their_defaults(base: dict[str, Any], tmp_path: Path) -> None:
    config = parse_config(_with(base, {"kind": "file", "path": "audit.jsonl", "max_bytes": "64KiB"},
                                {"kind": "syslog", "host": "logs.internal"},
                                {"kind": "otlp", "endpoint": "http://127.0.0.1:4318/v1/logs"}),
                          base_dir=tmp_path)  # fmt: skip
    file, syslog, otlp = config.audit.export
    assert isinstance(file, FileExport)
    assert (file.path, file.max_bytes, file.keep, file.sink_name) == (tmp_path / "audit.jsonl", 65536, 10, "file")
    assert isinstance(syslog, SyslogExport)
    assert (syslog.port, syslog.tls, syslog.facility, syslog.app_name) == (6514, True, 13, "bastion")
    assert isinstance(otlp, OtlpExport)
    assert otlp.sink_name == "otlp"


@pytest.mark.parametrize(("export", "said"), [
    ({"kind": "kafka"}, "audit.export.0"),
    ({"kind": "file", "path": "a", "max_bytes": "lots"}, "not a size"),
    ({"kind": "file", "path": "a", "max_bytes": 10}, "max_bytes"),
    ({"kind": "syslog", "host": "h", "tls": False, "ca_file": "ca.pem"}, "ca_file is only used with tls"),
    ({"kind": "syslog", "host": "h", "facility": 24}, "facility"),
    ({"kind": "syslog", "host": "h", "app_name": "has space"}, "app_name"),
    ({"kind": "otlp", "endpoint": "grpc://collector:4317"}, "must be an http:// or https:// URL"),
    ({"kind": "otlp", "endpoint": "http://c/v1/logs", "headers": {"authorization": {"env": "A", "file": "b"}}},
     "exactly one"),
])  # fmt: skip
def test_bad_entries_are_refused_naming_the_key(base: dict[str, Any], export: dict[str, Any], said: str) -> None:
    assert said in _error(_with(base, export))


def test_two_destinations_of_one_kind_need_names_of_their_own(base: dict[str, Any]) -> None:
    said = _error(_with(base, {"kind": "file", "path": "a"}, {"kind": "file", "path": "b"}))
    assert "another destination is already named 'file'" in said
    config = parse_config(_with(base, {"kind": "file", "path": "a"}, {"kind": "file", "path": "b", "name": "copy"}))
    assert [e.sink_name for e in config.audit.export] == ["file", "copy"]


def test_exporters_are_built_per_destination(base: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_AUTH", "Bearer t0ken")
    config = parse_config(_with(base, {"kind": "file", "path": "a.jsonl"},
                                {"kind": "syslog", "host": "h", "tls": False},
                                {"kind": "otlp", "endpoint": "http://c/v1/logs",
                                 "headers": {"authorization": {"env": "OTEL_AUTH"}}}))  # fmt: skip
    exporters = build_exporters(config, config.data_dir / "bastion.db")
    assert [(e.name, type(e.sink)) for e in exporters] == [("file", FileSink), ("syslog", SyslogSink),
                                                           ("otlp", OtlpSink)]  # fmt: skip
    assert build_exporters(parse_config(base), config.data_dir / "bastion.db") == []


def test_a_missing_header_secret_is_refused_naming_the_header(base: dict[str, Any]) -> None:
    config = parse_config(_with(base, {"kind": "otlp", "endpoint": "http://c/v1/logs",
                                       "headers": {"authorization": {"env": "BASTION_TEST_UNSET_VAR"}}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"audit.export.0.headers.authorization: .*BASTION_TEST_UNSET_VAR"):
        build_exporters(config, config.data_dir / "bastion.db")


@pytest.mark.parametrize("kind", [{"kind": "syslog", "host": "h"}, {"kind": "otlp", "endpoint": "https://c/v1/logs"}])
def test_an_unreadable_ca_file_is_a_config_error(base: dict[str, Any], tmp_path: Path, kind: dict[str, Any]) -> None:
    (tmp_path / "not-a-ca.pem").write_text("garbage")
    for ca_file, said in ((tmp_path / "missing.pem", "No such file"), (tmp_path / "not-a-ca.pem", "")):
        config = parse_config(_with(base, {**kind, "ca_file": str(ca_file)}))
        with pytest.raises(ConfigError, match=f"audit.export.0.ca_file: .*{said}"):
            build_exporters(config, config.data_dir / "bastion.db")


def test_with_a_shared_log_the_cursor_is_in_postgresql(base: dict[str, Any]) -> None:
    shared = parse_config({**_with(base, {"kind": "otlp", "endpoint": "http://c/v1/logs"}),
                           "stores": {"postgres": {"url": "postgresql://bastion@db:5432/gw"}}})  # fmt: skip
    (local,) = build_exporters(shared, shared.data_dir / "bastion.db")
    assert isinstance(local.source, LocalSource)
    (exporter,) = build_exporters(shared, shared.data_dir / "bastion.db", PostgresDatabase("postgresql://db/gw"))
    assert isinstance(exporter.source, PostgresSource)
    assert exporter.source.name == "otlp"


def test_a_file_destination_on_the_shared_log_is_refused(base: dict[str, Any]) -> None:
    shared = parse_config({**_with(base, {"kind": "file", "path": "a"}),
                           "stores": {"postgres": {"url": "postgresql://bastion@db:5432/gw"}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"audit\.export\.0: a file destination with stores\.postgres"):
        build_exporters(shared, shared.data_dir / "bastion.db", PostgresDatabase("postgresql://db/gw"))
