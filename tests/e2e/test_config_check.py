"""Configuration validation: ``bastion check`` and ``bastion serve`` on good and bad files.

A bad file is refused with a non-zero exit and one message naming the place
(file and dotted key, or the policy file), never a traceback; ``serve`` with a
bad file never starts listening.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.conftest import DEMO_CEDAR
from tests.support.bastion_process import BASTION, free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
BROKEN_CEDAR = """
@id("ok")
permit (principal, action == Action::"tools/call", resource);

@id("broken")
permit (principal in Group::"x", action == Action::"tools/call" resource)
when { resource.risk == };
"""


def _base(tmp: Path, port: int | None = None) -> dict[str, Any]:
    policy = tmp / "policy.cedar"
    policy.write_text(DEMO_CEDAR.read_text(encoding="utf-8"), encoding="utf-8")
    return {
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": port or free_port()},
        "policy": {"files": [str(policy)]},
        "routes": [
            {
                "name": "time",
                "stdio": {
                    "command": str(BIN / "mcp-server-time"),
                    "env": {"TZ": "UTC", "UPSTREAM_TOKEN": {"env": "E2E_CHECK_SECRET"}},
                },
            },
            {
                "name": "notes",
                "http": {
                    "url": "http://127.0.0.1:9/mcp",
                    "headers": {"X-Team": "ops"},
                    "allow_http": True,
                    "allow": ["127.0.0.1"],
                },
            },
        ],
    }


def _write(tmp: Path, config: dict[str, Any]) -> Path:
    path = tmp / "bastion.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E2E_CHECK_SECRET": "from-the-environment", "COLUMNS": "250"}
    return subprocess.run([BASTION, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def _unknown_key(tmp: Path, c: dict[str, Any]) -> str:
    c["server"]["listen_everywhere"] = True
    return "server.listen_everywhere"


def _unknown_top_level_key(tmp: Path, c: dict[str, Any]) -> str:
    c["routez"] = []
    return "routez"


def _cedar_syntax_error(tmp: Path, c: dict[str, Any]) -> str:
    (tmp / "policy.cedar").write_text(BROKEN_CEDAR, encoding="utf-8")
    return "policy.cedar"


def _inline_secret(tmp: Path, c: dict[str, Any]) -> str:
    c["routes"][0]["stdio"]["env"]["API_TOKEN"] = "abc"
    return "routes.0.stdio.env"


def _inline_header_secret(tmp: Path, c: dict[str, Any]) -> str:
    c["routes"][1]["http"]["headers"]["Authorization"] = "Bearer abc"
    return "routes.1.http.headers"


def _missing_policy_file(tmp: Path, c: dict[str, Any]) -> str:
    c["policy"]["files"] = [str(tmp / "nowhere.cedar")]
    return "policy.files.0"


def _unset_secret_reference(tmp: Path, c: dict[str, Any]) -> str:
    c["routes"][0]["stdio"]["env"]["UPSTREAM_TOKEN"] = {"env": "E2E_DEFINITELY_NOT_SET"}
    return "E2E_DEFINITELY_NOT_SET"


def _unset_client_secret(tmp: Path, c: dict[str, Any]) -> str:
    client = {"client_id": "svc", "redirect_uris": ["https://app.example/cb"], "client_secret": {"env": "E2E_NO"}}
    c["identity"] = {"authorization_server": {"clients": [client]}}
    return "identity.authorization_server.clients.0.client_secret"


def _bad_redirect_uri(tmp: Path, c: dict[str, Any]) -> str:
    c["identity"] = {
        "authorization_server": {"clients": [{"client_id": "x", "redirect_uris": ["http://evil.example/"]}]}
    }
    return "identity.authorization_server.clients.0.redirect_uris"


def _plaintext_users_file(tmp: Path, c: dict[str, Any]) -> str:
    (tmp / "users.yaml").write_text("users:\n  - {username: alice, password: hunter2}\n", encoding="utf-8")
    c["identity"] = {"authorization_server": {"users_file": str(tmp / "users.yaml")}}
    return "users.yaml"


def _provider(**extra: Any) -> dict[str, Any]:
    return {"name": "corp", "issuer": "https://login.example", "client_id": "bastion", **extra}


def _unset_provider_secret(tmp: Path, c: dict[str, Any]) -> str:
    provider = _provider(client_secret={"file": "missing-secret"})
    c["identity"] = {"authorization_server": {"identity_providers": [provider]}}
    return "identity.authorization_server.identity_providers.0.client_secret"


def _http_provider_issuer(tmp: Path, c: dict[str, Any]) -> str:
    c["identity"] = {"authorization_server": {"identity_providers": [_provider(issuer="http://login.example")]}}
    return "identity.authorization_server.identity_providers.0.issuer"


def _provider_without_openid_scope(tmp: Path, c: dict[str, Any]) -> str:
    c["identity"] = {"authorization_server": {"identity_providers": [_provider(scopes=["email"])]}}
    return "identity.authorization_server.identity_providers.0.scopes"


def _bad_url_argument_allow_entry(tmp: Path, c: dict[str, Any]) -> str:
    c["routes"][0]["url_arguments"] = {"names": ["url"], "allow": ["10.0.0.1/8"]}
    return "routes.0.url_arguments.allow"


def _bad_egress_allow_entry(tmp: Path, c: dict[str, Any]) -> str:
    c["egress"] = {"allow": ["10.0.0.0/33"]}
    return "10.0.0.0/33"


def _plain_http_upstream(tmp: Path, c: dict[str, Any]) -> str:
    del c["routes"][1]["http"]["allow_http"]
    return "routes.1.http"


def _loopback_upstream_not_allowed(tmp: Path, c: dict[str, Any]) -> str:
    del c["routes"][1]["http"]["allow"]
    return "routes.notes.http.url: the egress guard refuses 127.0.0.1, a loopback address"


def _metadata_upstream_in_another_spelling(tmp: Path, c: dict[str, Any]) -> str:
    c["routes"][1]["http"]["url"] = "https://2852039166/mcp"
    return "routes.notes.http.url: the egress guard refuses 169.254.169.254, a cloud metadata address"


def _bad_upstream_allow_entry(tmp: Path, c: dict[str, Any]) -> str:
    c["routes"][1]["http"]["allow"] = ["127.0.0.1/8"]
    return "routes.1.http.allow"


BAD: dict[str, Callable[[Path, dict[str, Any]], str]] = {
    "plain-http-upstream": _plain_http_upstream,
    "loopback-upstream-not-allowed": _loopback_upstream_not_allowed,
    "metadata-upstream-in-another-spelling": _metadata_upstream_in_another_spelling,
    "bad-upstream-allow-entry": _bad_upstream_allow_entry,
    "unset-client-secret": _unset_client_secret,
    "bad-redirect-uri": _bad_redirect_uri,
    "plaintext-users-file": _plaintext_users_file,
    "bad-egress-allow-entry": _bad_egress_allow_entry,
    "bad-url-argument-allow-entry": _bad_url_argument_allow_entry,
    "unset-provider-secret": _unset_provider_secret,
    "http-provider-issuer": _http_provider_issuer,
    "provider-without-openid-scope": _provider_without_openid_scope,
    "unknown-key": _unknown_key,
    "unknown-top-level-key": _unknown_top_level_key,
    "cedar-syntax-error": _cedar_syntax_error,
    "inline-secret": _inline_secret,
    "inline-header-secret": _inline_header_secret,
    "missing-policy-file": _missing_policy_file,
    "unset-secret-reference": _unset_secret_reference,
}


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    path = _write(tmp_path, _base(tmp_path))
    result = _run("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    assert "time" in result.stdout
    assert "notes" in result.stdout
    assert "authorization server: 0 registered clients" in result.stdout
    assert "egress allow list: none" in result.stdout


def test_check_shows_where_each_store_keeps_its_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _base(tmp_path)
    path = _write(tmp_path, config)
    lines = _run("check", "--config", str(path), cwd=tmp_path).stdout.splitlines()
    revocations = next(line for line in lines if "revocations" in line)
    assert "SQLite" in revocations
    assert "this process only" in revocations
    config["stores"] = {"postgres": {"url": "postgresql://bastion@db.internal:5432/gw", "password": {"env": "E2E_PG"}}}
    path = _write(tmp_path, config)
    unset = _run("check", "--config", str(path), cwd=tmp_path)
    assert unset.returncode != 0
    assert "stores.postgres.password: environment variable E2E_PG is not set" in unset.stderr
    monkeypatch.setenv("E2E_PG", "s3cret-pg")
    shared = _run("check", "--config", str(path), cwd=tmp_path)
    assert shared.returncode == 0, shared.stdout + shared.stderr
    revocations = next(line for line in shared.stdout.splitlines() if "revocations" in line)
    assert "PostgreSQL" in revocations
    assert "shared" in revocations
    assert "s3cret-pg" not in shared.stdout


def test_check_lists_identity_providers_with_their_secrets_resolved(tmp_path: Path) -> None:
    config = _base(tmp_path)
    (tmp_path / "corp-secret").write_text("s3cret\n", encoding="utf-8")
    providers = [
        _provider(client_secret={"file": "corp-secret"}),
        _provider(name="partner", issuer="https://p.example"),
    ]
    config["identity"] = {"authorization_server": {"identity_providers": providers}}
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OpenID Connect corp (https://login.example)" in result.stdout
    assert "OpenID Connect partner (https://p.example)" in result.stdout
    assert "s3cret" not in result.stdout


def test_check_shows_each_http_upstream_with_its_allow_list(tmp_path: Path) -> None:
    config = _base(tmp_path)
    config["egress"] = {"allow": ["10.0.0.0/8"]}
    config["routes"].append({"name": "wiki", "http": {"url": "https://10.1.2.3/mcp"}})
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "route notes: upstream http://127.0.0.1:9/mcp; allowed: 127.0.0.1; plain http: allowed" in result.stdout
    assert (
        "route wiki: upstream https://10.1.2.3/mcp; allowed: public addresses only; plain http: refused (https only)"
        in result.stdout
    )


def test_check_shows_each_routes_url_arguments_and_allow_list(tmp_path: Path) -> None:
    config = _base(tmp_path)
    config["routes"][0]["url_arguments"] = {"names": ["url"], "format_uri": True, "allow": ["10.1.0.0/16"]}
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    name = config["routes"][0]["name"]
    assert f"route {name}: URL arguments url, any format: uri; allowed: 10.1.0.0/16" in result.stdout


def test_check_loads_the_shadow_policies_too(tmp_path: Path) -> None:
    config = _base(tmp_path)
    shadow = tmp_path / "shadow.cedar"
    shadow.write_text('@id("next") permit (principal, action == Action::"tools/call", resource);\n', encoding="utf-8")
    config["policy"]["shadow_files"] = [str(shadow)]
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shadow policies: 1 loaded and validated, never enforced" in result.stdout
    shadow.write_text('@id("broken") permit (principal, action == Action::"tools/call", resource) when { nope };\n')
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert result.returncode != 0
    assert "shadow.cedar" in result.stdout + result.stderr


def test_check_shows_approvals_and_warns_when_nobody_could_give_one(tmp_path: Path) -> None:
    config = _base(tmp_path)
    policy = tmp_path / "policy.cedar"
    policy.write_text(
        policy.read_text(encoding="utf-8")
        + '\n@id("restart-reviewed") @approval("review")\n'
        + 'permit (principal, action == Action::"tools/call", resource == Tool::"notes/restart");\n',
        encoding="utf-8",
    )
    webhook = {"url": "https://hooks.example/b", "secret": {"env": "E2E_CHECK_SECRET"}}
    config["approvals"] = {"hold": "30s", "ttl": "10m", "webhook": webhook}
    config["identity"] = {"authorization_server": {"enabled": False}}
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "approvals: 1 policy asks; hold 30s, grants live 600s; webhook hooks.example" in result.stdout
    assert "policies restart-reviewed ask for approval, but nobody can give one" in result.stdout
    config["identity"] = {}  # the portal is there: no warning
    result = _run("check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert "nobody can give one" not in result.stdout


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_refuses_a_bad_config_naming_the_place(tmp_path: Path, case: str) -> None:
    config = _base(tmp_path)
    place = BAD[case](tmp_path, config)
    path = _write(tmp_path, config)
    result = _run("check", "--config", str(path), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert place in output, output
    assert "Traceback" not in output
    assert "OK" not in result.stdout


def _listening(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("case", ["unknown-key", "cedar-syntax-error", "unset-secret-reference", "plain-http-upstream"])
def test_serve_with_a_bad_config_exits_without_listening(tmp_path: Path, case: str) -> None:
    port = free_port()
    config = _base(tmp_path, port)
    place = BAD[case](tmp_path, config)
    path = _write(tmp_path, config)
    proc = subprocess.Popen(
        [BASTION, "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "E2E_CHECK_SECRET": "x", "COLUMNS": "250"},
    )
    listened = False
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            listened = listened or _listening(port)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert not listened
    assert not _listening(port)
    assert place in out + err, out + err
    assert "Traceback" not in out + err
