"""Tests of ``bastion.config``: every error names the file and the dotted key; paths resolve next to the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.config import BastionConfig, SecretRef, load_config, parse_config
from bastion.errors import ConfigError


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.cedar"
    path.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    return path


@pytest.fixture
def base(policy: Path) -> dict[str, Any]:
    return {
        "policy": {"files": [str(policy)]},
        "routes": [
            {"name": "notes", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]}}
        ],
    }


def _error(data: Any, source: str = "bastion.yaml", base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source=source, base_dir=base_dir)
    return caught.value.message


def _route(**fields: Any) -> dict[str, Any]:
    return {"name": "r", **fields}


# --- a valid file ----------------------------------------------------------------------------


def test_a_minimal_configuration_parses_with_defaults(base: dict[str, Any], tmp_path: Path) -> None:
    config = parse_config(base, base_dir=tmp_path)
    assert isinstance(config, BastionConfig)
    assert config.server.base_url == "http://127.0.0.1:8080"
    assert config.issuer == "http://127.0.0.1:8080"
    route = config.route("notes")
    assert route.public_path == "/mcp/notes"
    assert config.resource_uri(route) == "http://127.0.0.1:8080/mcp/notes"
    assert config.data_dir == tmp_path / ".bastion"
    assert config.identity.max_token_ttl == 3600


def test_public_url_and_ipv6_hosts_shape_the_base_url(base: dict[str, Any]) -> None:
    assert parse_config({**base, "server": {"host": "::1", "port": 9}}).server.base_url == "http://[::1]:9"
    config = parse_config({**base, "server": {"public_url": "https://gw.example/"}})
    assert config.server.base_url == "https://gw.example"
    assert config.issuer == "https://gw.example"


def test_an_unknown_route_lookup_names_the_routes(base: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="no route named 'x'; routes: notes"):
        parse_config(base).route("x")


def test_the_top_level_must_be_a_mapping() -> None:
    assert "mapping at the top level" in _error([1, 2])
    assert "mapping at the top level" in _error(None)


# --- errors name the dotted key --------------------------------------------------------------


def test_an_unknown_top_level_key_is_named(base: dict[str, Any]) -> None:
    assert _error({**base, "bogus": 1}) == "bastion.yaml: bogus: Extra inputs are not permitted"


def test_an_unknown_nested_key_is_named(base: dict[str, Any]) -> None:
    assert "bastion.yaml: server.bogus: Extra inputs" in _error({**base, "server": {"bogus": 1}})
    message = _error({**base, "routes": [_route(http={"url": "https://x", "extra": 1})]})
    assert "routes.0.http.extra: Extra inputs" in message


@pytest.mark.parametrize("url", ["ftp://x/mcp", "http://", "not a url", "file:///etc/passwd", "//host/mcp"])
def test_a_bad_upstream_url_is_named(base: dict[str, Any], url: str) -> None:
    message = _error({**base, "routes": [base["routes"][0], _route(http={"url": url})]})
    assert "bastion.yaml: routes.1.http.url:" in message
    assert "http:// or https:// URL" in message


def test_a_plain_http_upstream_needs_allow_http(base: dict[str, Any]) -> None:
    message = _error({**base, "routes": [_route(http={"url": "http://mcp.example/mcp?key=s3cret"})]})
    assert message.startswith("bastion.yaml: routes.0.http: ")
    assert "upstream http://mcp.example/mcp is plain http" in message
    assert "allow_http: true" in message
    assert "s3cret" not in message
    config = parse_config({**base, "routes": [_route(http={"url": "http://mcp.example/mcp", "allow_http": True})]})
    assert config.route("r").http is not None
    assert config.route("r").http.allow_http is True


def test_an_upstream_is_https_only_and_public_only_by_default(base: dict[str, Any]) -> None:
    http = parse_config({**base, "routes": [_route(http={"url": "https://mcp.example/mcp"})]}).route("r").http
    assert http is not None
    assert (http.allow, http.allow_http) == ((), False)


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "10.0.0.0/33", "host:0", "host:99999", "[::1"])
def test_a_bad_upstream_allow_entry_is_named(base: dict[str, Any], entry: str) -> None:
    message = _error({**base, "routes": [_route(http={"url": "https://x", "allow": [entry]})]})
    assert "bastion.yaml: routes.0.http.allow:" in message
    assert repr(entry) in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [("https://user:pw@x/mcp", "carries user info"), ("https://%6c%6f%63%61%6c%68%6f%73%74/", "percent-encoded")],
)
def test_an_upstream_url_the_egress_guard_cannot_read_is_refused(base: dict[str, Any], url: str, reason: str) -> None:
    message = _error({**base, "routes": [_route(http={"url": url})]})
    assert "routes.0.http.url:" in message
    assert reason in message
    assert "pw@" not in message


@pytest.mark.parametrize("name", ["Notes", "has space", "-lead", "", "a" * 64, "ü", "a/b"])
def test_a_bad_route_name_is_named(base: dict[str, Any], name: str) -> None:
    message = _error({**base, "routes": [{"name": name, "http": {"url": "https://x"}}]})
    assert "routes.0.name:" in message


@pytest.mark.parametrize("path", ["mcp", "/mcp/", "/a//b", "/.well-known/x"])
def test_a_bad_route_path_is_named(base: dict[str, Any], path: str) -> None:
    assert "routes.0.path:" in _error({**base, "routes": [_route(path=path, http={"url": "https://x"})]})


def test_route_names_must_be_unique(base: dict[str, Any]) -> None:
    routes = [_route(http={"url": "https://x"}), _route(http={"url": "https://y"})]
    assert "route names must be unique; repeated: r" in _error({**base, "routes": routes})


def test_route_paths_must_be_unique_including_default_paths(base: dict[str, Any]) -> None:
    routes = [
        {"name": "a", "http": {"url": "https://x"}},
        {"name": "b", "path": "/mcp/a", "http": {"url": "https://y"}},
    ]
    assert "route paths must be unique; repeated: /mcp/a" in _error({**base, "routes": routes})


def test_at_least_one_route_is_required(base: dict[str, Any]) -> None:
    assert "routes:" in _error({**base, "routes": []})


@pytest.mark.parametrize(
    "route",
    [
        _route(stdio={"command": "x"}, http={"url": "https://x"}),
        _route(),
    ],
    ids=["both", "neither"],
)
def test_a_route_needs_exactly_one_upstream(base: dict[str, Any], route: dict[str, Any]) -> None:
    message = _error({**base, "routes": [route]})
    assert "bastion.yaml: routes.0: " in message
    assert "exactly one upstream" in message


def test_a_failing_route_is_reported_first_with_its_key(base: dict[str, Any]) -> None:
    message = _error({**base, "routes": [_route(http={"url": "ftp://x"})]})
    assert message.splitlines()[0].startswith("bastion.yaml: routes.0.http.url:")


def test_one_bad_route_gives_one_error_line(base: dict[str, Any]) -> None:
    message = _error({**base, "routes": [_route(http={"url": "ftp://x"})]})
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "connection", "Upgrade"])
def test_a_route_cannot_set_a_header_of_the_connection_or_the_framing(base: dict[str, Any], name: str) -> None:
    route = _route(http={"url": "https://mcp.example/mcp", "headers": {name: "x"}})
    message = _error({**base, "routes": [route]})
    assert "routes.0.http.headers:" in message
    assert f"header {name!r} is the connection's own" in message


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "passwd", "client_secret", "PRIVATE_KEY", "my-apikey"]
)
def test_an_inline_secret_in_a_secret_looking_env_var_is_refused(base: dict[str, Any], name: str) -> None:
    route = _route(stdio={"command": "srv", "env": {name: "hunter2"}})
    message = _error({**base, "routes": [route]})
    assert "routes.0.stdio.env:" in message
    assert f"{name!r} looks like a secret written inline" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("name", ["Authorization", "X-Api-Key", "X-Auth-Token", "Proxy-Authorization"])
def test_an_inline_secret_in_a_secret_looking_header_is_refused(base: dict[str, Any], name: str) -> None:
    route = _route(http={"url": "https://x", "headers": {name: "Bearer abc"}})
    message = _error({**base, "routes": [route]})
    assert "routes.0.http.headers:" in message
    assert "looks like a secret" in message


def test_references_and_harmless_names_are_accepted(base: dict[str, Any], tmp_path: Path) -> None:
    route = _route(
        stdio={
            "command": "srv",
            "env": {"API_KEY": {"env": "SRV_KEY"}, "TOKEN": {"file": "tok.txt"}, "LOG_LEVEL": "debug", "PASSWORD": ""},
        }
    )
    config = parse_config({**base, "routes": [route]})
    stdio = config.routes[0].stdio
    assert stdio is not None
    assert stdio.env["API_KEY"] == SecretRef(env="SRV_KEY")
    assert stdio.env["LOG_LEVEL"] == "debug"


@pytest.mark.parametrize("ref", [{"env": "A", "file": "b"}, {}], ids=["both", "neither"])
def test_a_secret_reference_needs_exactly_one_source(base: dict[str, Any], ref: dict[str, Any]) -> None:
    route = _route(stdio={"command": "srv", "env": {"TOKEN": ref}})
    message = _error({**base, "routes": [route]})
    assert "routes.0.stdio.env.TOKEN" in message
    assert "exactly one of 'env' or 'file'" in message


def test_a_secret_reference_resolves_from_env_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BASTION_TEST_SECRET", "s3cret")
    assert SecretRef(env="BASTION_TEST_SECRET").resolve() == "s3cret"
    (tmp_path / "s").write_text("  from-file\n", encoding="utf-8")
    assert SecretRef(file=tmp_path / "s").resolve() == "from-file"


def test_an_unresolvable_secret_reference_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BASTION_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError, match="BASTION_TEST_MISSING is not set"):
        SecretRef(env="BASTION_TEST_MISSING").resolve()
    with pytest.raises(ConfigError, match="cannot be read"):
        SecretRef(file=tmp_path / "absent").resolve()


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "max_ttl", "default_ttl"),
    [
        ({"max_token_ttl": "2h", "default_token_ttl": "10m"}, 7200, 600),
        ({"max_token_ttl": "24h"}, 86400, 900),
        ({"max_token_ttl": "1d", "default_token_ttl": "1d"}, 86400, 86400),
        ({"max_token_ttl": 1800, "default_token_ttl": "90s"}, 1800, 90),
        ({"max_token_ttl": "3600"}, 3600, 900),
    ],
)
def test_ttl_strings_are_parsed(base: dict[str, Any], identity: dict[str, Any], max_ttl: int, default_ttl: int) -> None:
    config = parse_config({**base, "identity": identity})
    assert (config.identity.max_token_ttl, config.identity.default_token_ttl) == (max_ttl, default_ttl)


def test_session_idle_accepts_a_duration(base: dict[str, Any]) -> None:
    assert parse_config({**base, "server": {"session_idle_s": "30m"}}).server.session_idle_s == 1800


@pytest.mark.parametrize("value", ["abc", "1.5h", "-1h", "1H", "1 h", "", "1w"])
def test_a_bad_ttl_string_is_named(base: dict[str, Any], value: str) -> None:
    message = _error({**base, "identity": {"max_token_ttl": value}})
    assert "identity.max_token_ttl:" in message


@pytest.mark.parametrize("value", ["25h", "2d", 86401])
def test_a_max_ttl_over_24h_is_refused(base: dict[str, Any], value: Any) -> None:
    message = _error({**base, "identity": {"max_token_ttl": value, "default_token_ttl": "5m"}})
    assert "identity:" in message
    assert "above 24h is refused" in message


def test_a_default_ttl_above_the_max_is_refused(base: dict[str, Any]) -> None:
    message = _error({**base, "identity": {"max_token_ttl": "1h", "default_token_ttl": "2h"}})
    assert "bastion.yaml: identity: " in message
    assert "default_token_ttl exceeds max_token_ttl" in message


def test_a_zero_ttl_is_refused(base: dict[str, Any]) -> None:
    assert "identity.default_token_ttl" in _error({**base, "identity": {"default_token_ttl": "0s"}})


# --- files and paths -------------------------------------------------------------------------


def test_a_missing_policy_file_is_named(base: dict[str, Any], tmp_path: Path) -> None:
    data = {**base, "policy": {"files": [base["policy"]["files"][0], "nope.cedar"]}}
    message = _error(data, base_dir=tmp_path)
    assert message == f"bastion.yaml: policy.files.1: {tmp_path / 'nope.cedar'} does not exist"


def test_a_missing_schema_is_named(base: dict[str, Any], tmp_path: Path) -> None:
    data = {**base, "policy": {**base["policy"], "schema": "absent.cedarschema"}}
    assert "bastion.yaml: policy.schema:" in _error(data, base_dir=tmp_path)


def test_a_stdio_cwd_that_is_not_a_directory_is_named(base: dict[str, Any], tmp_path: Path) -> None:
    data = {**base, "routes": [_route(stdio={"command": "x", "cwd": "nowhere"})]}
    assert "bastion.yaml: routes.0.stdio.cwd:" in _error(data, base_dir=tmp_path)


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    confdir = tmp_path / "etc" / "bastion"
    (confdir / "policies").mkdir(parents=True)
    (confdir / "policies" / "p.cedar").write_text("", encoding="utf-8")
    (confdir / "schema.cedarschema").write_text("", encoding="utf-8")
    path = _write(
        confdir / "bastion.yaml",
        {
            "data_dir": "state",
            "policy": {"files": ["policies/p.cedar", "policies"], "schema": "schema.cedarschema"},
            "routes": [{"name": "r", "stdio": {"command": "srv"}}],
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    resolved = confdir.resolve()
    assert config.data_dir == resolved / "state"
    assert config.policy.files == (resolved / "policies" / "p.cedar", resolved / "policies")
    assert config.policy.schema_file == resolved / "schema.cedarschema"


def test_a_relative_stdio_cwd_resolves_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Path
) -> None:
    confdir = tmp_path / "conf"
    (confdir / "work").mkdir(parents=True)
    path = _write(
        confdir / "bastion.yaml",
        {"policy": {"files": [str(policy)]}, "routes": [{"name": "r", "stdio": {"command": "srv", "cwd": "work"}}]},
    )
    monkeypatch.chdir(tmp_path)
    stdio = load_config(path).routes[0].stdio
    assert stdio is not None
    assert stdio.cwd == confdir.resolve() / "work"


def test_a_relative_secret_file_resolves_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Path
) -> None:
    confdir = tmp_path / "conf"
    confdir.mkdir()
    (confdir / "token.txt").write_text("s3cret\n", encoding="utf-8")
    path = _write(
        confdir / "bastion.yaml",
        {
            "policy": {"files": [str(policy)]},
            "routes": [{"name": "r", "stdio": {"command": "srv", "env": {"TOKEN": {"file": "token.txt"}}}}],
        },
    )
    monkeypatch.chdir(tmp_path)
    stdio = load_config(path).routes[0].stdio
    assert stdio is not None
    ref = stdio.env["TOKEN"]
    assert isinstance(ref, SecretRef)
    assert ref.resolve() == "s3cret"


def test_a_missing_policy_is_named_with_the_file_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "b.yaml", {"policy": {"files": ["gone.cedar"]}, "routes": [{"name": "r", "stdio": {"command": "x"}}]}
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == f"{path}: policy.files.0: {tmp_path.resolve() / 'gone.cedar'} does not exist"


def test_absolute_paths_are_kept(tmp_path: Path, policy: Path) -> None:
    path = _write(
        tmp_path / "sub" / "b.yaml",
        {
            "data_dir": str(tmp_path / "d"),
            "policy": {"files": [str(policy)]},
            "routes": [{"name": "r", "stdio": {"command": "x"}}],
        },
    )
    config = load_config(path)
    assert config.policy.files == (policy,)
    assert config.data_dir == tmp_path / "d"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("routes:\n  - name: a\n   bad: indent\n", "line 3, column 4"),
        ("a: b: c\n", "line 1, column 5"),
        ("policy: [unclosed\n", "line 2, column 1"),
        ("key: 'unterminated\n", "line 2, column 1"),
    ],
)
def test_invalid_yaml_names_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message.startswith(f"{path}: invalid YAML at {where}:")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "missing.yaml")


def test_validation_errors_of_a_loaded_file_name_the_file(tmp_path: Path, policy: Path) -> None:
    path = _write(
        tmp_path / "b.yaml",
        {"policy": {"files": [str(policy)]}, "routes": [{"name": "BAD", "stdio": {"command": "x"}}]},
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message.startswith(f"{path}: routes.0.name:")


def test_an_empty_file_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(path)


def test_an_external_issuer_must_name_existing_routes(base: dict[str, Any]) -> None:
    external = {"issuer": "https://idp.example", "jwks_url": "https://idp.example/jwks", "audience": "bastion"}
    message = _error({**base, "identity": {"external_issuers": [{**external, "routes": ["nope"]}]}})
    assert "identity.external_issuers.0.routes names no route: nope" in message
    message = _error({**base, "identity": {"external_issuers": [external]}})
    assert "identity.external_issuers.0.routes" in message  # required: never every route by default
