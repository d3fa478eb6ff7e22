"""MCP client configurations: where each client keeps them per platform, each format's entries,
and the checks on a configured server (hard-coded secrets, servers reached without Bastion)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.scan_corpus import DATA

from bastion.scan.clients import ServerEntry, client_config_paths, read_client_config
from bastion.scan.config_checks import check_server
from bastion.scan.secrets import find_secrets, is_reference, mask

CLIENTS = DATA / "clients"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("platform", "files"),
    [
        ("linux", [".config/Claude/claude_desktop_config.json", ".config/Code/User/mcp.json",
                   ".config/zed/settings.json"]),
        ("darwin", ["Library/Application Support/Claude/claude_desktop_config.json",
                    "Library/Application Support/Code/User/settings.json", ".config/zed/settings.json"]),
        ("win32", ["AppData/Roaming/Claude/claude_desktop_config.json", "AppData/Roaming/Code/User/mcp.json",
                   "AppData/Local/Zed/settings.json"]),
    ],
)  # fmt: skip
def test_configuration_paths_per_platform(tmp_path: Path, platform: str, files: list[str]) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    expected = [touch(home / f) for f in files]
    expected += [touch(home / ".claude.json"), touch(home / ".cursor" / "mcp.json"),
                 touch(home / ".codeium" / "windsurf" / "mcp_config.json")]  # fmt: skip
    expected += [
        touch(project / ".mcp.json"),
        touch(project / ".vscode" / "mcp.json"),
        touch(project / ".cursor" / "mcp.json"),
    ]
    environ = {"APPDATA": str(home / "AppData" / "Roaming"), "LOCALAPPDATA": str(home / "AppData" / "Local")}
    found = client_config_paths(home=home, cwd=project, platform=platform, environ=environ)
    assert sorted(path for _, path in found) == sorted(expected)
    assert {client for client, path in found if path.name == "mcp_config.json"} == {"Windsurf"}


def test_every_format_gives_its_servers() -> None:
    servers = {(c.client, e.name, e.transport, e.target) for f in sorted(CLIENTS.rglob("*")) if f.is_file()
               for c in [read_client_config(f)] for e in c.servers}  # fmt: skip
    assert ("Claude Desktop", "poisoned", "stdio", "python tests/support/poisoned_server.py") in servers
    assert ("Claude Code", "db", "stdio", "npx -y @modelcontextprotocol/server-postgres "
            "postgresql://shop:Wq7vT2pLs9xK@db.shop.internal:5432/shop") in servers  # fmt: skip
    assert ("VS Code", "search", "http", "http://search.corp.test:8080/mcp") in servers
    assert ("VS Code", "assistant", "stdio", "npx -y assistant-mcp --api-key "
            "sk-proj-Vf3kQ9xT2mLr8WbN4zHc7PdJ1sGy6AeU0oKi5RtZ") in servers  # JSON with comments  # fmt: skip
    assert ("Cursor", "remote-docs", "sse", "https://docs-mcp.vendor.test/sse") in servers
    assert ("Windsurf", "linear", "sse", "https://mcp.linear.vendor.test/sse") in servers
    assert ("Zed", "git", "stdio", "mcp-server-git --repository .") in servers  # the older {"command": {"path"}} form
    assert ("Zed", "remote", "http", "https://mcp.zed-remote.test/mcp") in servers


def test_claude_code_project_servers_have_their_pointer() -> None:
    config = read_client_config(CLIENTS / "claude-code" / ".claude.json")
    db = next(e for e in config.servers if e.name == "db")
    assert db.pointer == "/projects/~1home~1dev~1shop/mcpServers/db"


def test_unreadable_files_are_problems(tmp_path: Path) -> None:
    binary = tmp_path / "mcp.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert read_client_config(binary).problems
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    assert read_client_config(listed).problems[0].message == "not a JSON object"
    assert read_client_config(tmp_path / "missing.json").problems


def entry(**kwargs: object) -> ServerEntry:
    defaults: dict[str, object] = {"client": "Cursor", "source": Path("mcp.json"), "pointer": "/mcpServers/s",
                                   "name": "s", "transport": "stdio", "command": "npx"}  # fmt: skip
    return ServerEntry(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_secrets_in_env_args_headers_and_url() -> None:
    found = check_server(entry(env={"OPENAI_API_KEY": "sk-proj-Vf3kQ9xT2mLr8WbN4zHc7PdJ1sGy6AeU0oKi5RtZ"},
                               args=("--token", "ghp_R8sT2vLq9ZkX4mPw7NbY3cHd6FjG1aEu5QoI",
                                     "--key=Zq8Rk2Vx7Lm4Np9Wt3Hb6Jd1")))  # fmt: skip
    assert {(f.path, f.severity) for f in found} == {
        ("/mcpServers/s/env/OPENAI_API_KEY", "high"), ("/mcpServers/s/args/1", "high"),
        ("/mcpServers/s/args/2", "medium"),
    }  # fmt: skip
    remote = check_server(entry(transport="http", url="https://mcp.test/x?api_key=Zq8Rk2Vx7Lm4Np9Wt3Hb6Jd1Fg",
                                headers={"Authorization": "Bearer xoxb-5309418427-7785246193-Kt9Qm2Vx8RbL4nWz"}),
                          bastion="https://mcp.test")  # fmt: skip
    assert {(f.rule, f.path) for f in remote} == {("hardcoded-secret", "/mcpServers/s/headers/Authorization"),
                                                  ("hardcoded-secret", "/mcpServers/s/url")}  # fmt: skip


@pytest.mark.parametrize("value", ["${env:GITHUB_TOKEN}", "${GITHUB_TOKEN}", "$GITHUB_TOKEN", "${input:token}",
                                   "{{ secrets.token }}", "op://vault/github/token", "<your-token>",
                                   "your_api_key_here", "AKIAIOSFODNN7EXAMPLE", "Bearer ${env:T}"])  # fmt: skip
def test_references_and_placeholders_are_not_secrets(value: str) -> None:
    assert check_server(entry(env={"TOKEN": value}, headers={"Authorization": value})) == []


def test_plain_words_under_a_secret_name_are_not_secrets() -> None:
    assert find_secrets("production-database-readonly", key="DB_PASSWORD_NAME") == []
    assert find_secrets("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", key="TOKEN") == []
    assert is_reference("${env:X}")
    assert not is_reference("ghp_R8sT2vLq9ZkX4mPw7NbY3cHd6FjG1aEu5QoI")
    assert mask("ghp_R8sT2vLq9ZkX4mPw7NbY3cHd6FjG1aEu5QoI") == "ghp_… (40 characters)"


@pytest.mark.parametrize(
    ("url", "bastion", "severity"),
    [
        ("https://bastion.corp.test/mcp/notes", "https://bastion.corp.test", None),
        ("https://bastion.corp.test/mcp/notes", "https://bastion.corp.test/mcp", None),
        ("https://bastion.corp.test.evil.test/mcp", "https://bastion.corp.test", "medium"),
        ("https://other.test/mcp", "https://bastion.corp.test", "medium"),
        ("http://search.corp.test/mcp", None, "high"),
        ("http://127.0.0.1:8000/mcp", None, "medium"),
        ("http://[::1]:8000/mcp", None, "medium"),
    ],
)
def test_servers_reached_without_bastion(url: str, bastion: str | None, severity: str | None) -> None:
    found = [
        f for f in check_server(entry(transport="http", url=url), bastion=bastion) if f.rule == "unprotected-server"
    ]
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_sample_files_are_json_with_comments_only_where_the_client_allows_them() -> None:
    for path in (CLIENTS / "claude-desktop" / "claude_desktop_config.json", CLIENTS / "cursor" / "mcp.json"):
        json.loads(path.read_text("utf-8"))  # strict JSON for the clients that need it
