"""MCP client configurations: where each client keeps its servers, and the servers they name.

Formats read (each client's documented configuration file):

- Claude Desktop: ``claude_desktop_config.json``, ``{"mcpServers": {name: {command, args, env}}}``
  (macOS ``~/Library/Application Support/Claude``, Windows ``%APPDATA%\\Claude``, Linux
  ``~/.config/Claude``);
- Claude Code: ``~/.claude.json`` (``mcpServers`` at the top and under ``projects.<dir>``) and a
  project's ``.mcp.json``, entries with ``type`` ``stdio`` | ``http`` | ``sse``, ``url``, ``headers``;
- VS Code: ``mcp.json`` (``{"servers": {...}}``, user profile or ``.vscode/``) and ``settings.json``
  (``{"mcp": {"servers": {...}}}``), entries with ``type``, ``command``, ``args``, ``env``, ``url``,
  ``headers``;
- Cursor: ``~/.cursor/mcp.json`` and ``.cursor/mcp.json`` (``mcpServers``, ``url`` + ``headers`` for
  remote servers);
- Windsurf: ``~/.codeium/windsurf/mcp_config.json`` (``mcpServers``, ``serverUrl`` for remote servers);
- Zed: ``settings.json`` (``context_servers``: ``{"command": "...", "args": [...], "env": {...}}``,
  the older ``{"command": {"path", "args", "env"}}``, or ``{"url", "headers"}``).

Files are JSON with comments and trailing commas allowed (VS Code and Zed settings), read with
``json5``. A file that cannot be read or parsed gives a ``ConfigProblem``, never an exception.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import json5

__all__ = ["ClientConfig", "ConfigProblem", "ServerEntry", "client_config_paths", "read_client_config"]

Transport = Literal["stdio", "http", "sse"]
MAX_CONFIG_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerEntry:
    """One MCP server a client configuration names.

    ``client``: which client's format; ``source``: the file; ``pointer``: the entry's JSON pointer
    in it; ``transport``: ``stdio`` (``command``, ``args``, ``env``, ``cwd``) or ``http``/``sse``
    (``url``, ``headers``)."""

    client: str
    source: Path
    pointer: str
    name: str
    transport: Transport
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """What the entry runs or reaches, for display: the command line or the URL."""
        return self.url or " ".join([self.command or "", *self.args]).strip()


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """A configuration file that could not be read, or an entry that could not be understood."""

    source: Path
    message: str


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What one configuration file holds: its ``client`` format, its servers, its problems."""

    source: Path
    client: str
    servers: tuple[ServerEntry, ...]
    problems: tuple[ConfigProblem, ...] = ()


def client_config_paths(
    *, home: Path | None = None, cwd: Path | None = None, platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
) -> list[tuple[str, Path]]:  # fmt: skip
    """The configuration files MCP clients read on this machine (``platform`` as ``sys.platform``),
    user-wide under ``home`` and project-level under ``cwd``, as (client, path) pairs; only the
    files that exist."""
    home = home or Path.home()
    cwd = cwd or Path.cwd()
    if platform == "darwin":
        support = home / "Library" / "Application Support"
        claude_desktop, code_user, zed = support / "Claude", support / "Code" / "User", home / ".config" / "zed"
    elif platform.startswith("win"):
        appdata = Path(environ.get("APPDATA", str(home / "AppData" / "Roaming")))
        claude_desktop, code_user = appdata / "Claude", appdata / "Code" / "User"
        zed = Path(environ.get("LOCALAPPDATA", str(home / "AppData" / "Local"))) / "Zed"
    else:
        config = Path(environ.get("XDG_CONFIG_HOME", str(home / ".config")))
        claude_desktop, code_user, zed = config / "Claude", config / "Code" / "User", config / "zed"
    candidates = [
        ("Claude Desktop", claude_desktop / "claude_desktop_config.json"),
        ("Claude Code", home / ".claude.json"),
        ("Claude Code", cwd / ".mcp.json"),
        ("VS Code", code_user / "mcp.json"),
        ("VS Code", code_user / "settings.json"),
        ("VS Code", cwd / ".vscode" / "mcp.json"),
        ("Cursor", home / ".cursor" / "mcp.json"),
        ("Cursor", cwd / ".cursor" / "mcp.json"),
        ("Windsurf", home / ".codeium" / "windsurf" / "mcp_config.json"),
        ("Zed", zed / "settings.json"),
        ("Zed", cwd / ".zed" / "settings.json"),
    ]
    seen: set[Path] = set()
    found = []
    for client, path in candidates:
        if path.is_file() and path not in seen:
            seen.add(path)
            found.append((client, path))
    return found


def _guess_client(path: Path, data: Mapping[str, Any]) -> str:
    name = path.name
    parts = {p.lower() for p in path.parts}
    if "context_servers" in data:
        return "Zed"
    if "servers" in data or isinstance(data.get("mcp"), Mapping):
        return "VS Code"
    if name == "claude_desktop_config.json":
        return "Claude Desktop"
    if name in (".claude.json", ".mcp.json") or "projects" in data:
        return "Claude Code"
    if name == "mcp_config.json" or "windsurf" in parts or ".codeium" in parts:
        return "Windsurf"
    if ".cursor" in parts or "cursor" in parts:
        return "Cursor"
    return "Claude Desktop"  # the common "mcpServers" format


def read_client_config(path: Path, client: str | None = None) -> ClientConfig:
    """Read one client configuration file (``client``: its format, guessed from the file when
    None). Never raises: unreadable or invalid files give a ``ConfigProblem``."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return ClientConfig(path, client or "unknown", (), (ConfigProblem(path, "file larger than 8 MiB"),))
        data = json5.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        return ClientConfig(path, client or "unknown", (), (ConfigProblem(path, f"cannot read: {exc}"),))
    except ValueError as exc:
        return ClientConfig(path, client or "unknown", (), (ConfigProblem(path, f"not valid JSON: {exc}"),))
    if not isinstance(data, Mapping):
        return ClientConfig(path, client or "unknown", (), (ConfigProblem(path, "not a JSON object"),))
    client = client or _guess_client(path, data)
    servers: list[ServerEntry] = []
    problems: list[ConfigProblem] = []
    for pointer, name, entry in _server_tables(data):
        parsed = _entry(client, path, pointer, name, entry)
        if isinstance(parsed, ServerEntry):
            servers.append(parsed)
        else:
            problems.append(ConfigProblem(path, f"{pointer}: {parsed}"))
    return ClientConfig(path, client, tuple(servers), tuple(problems))


def _server_tables(data: Mapping[str, Any]) -> Iterator[tuple[str, str, object]]:
    """Every (pointer, name, entry) of the server tables the formats use."""
    tables: list[tuple[str, object]] = [
        ("/mcpServers", data.get("mcpServers")),
        ("/servers", data.get("servers")),
        ("/context_servers", data.get("context_servers")),
    ]
    mcp = data.get("mcp")
    if isinstance(mcp, Mapping):
        tables.append(("/mcp/servers", mcp.get("servers")))
    projects = data.get("projects")
    if isinstance(projects, Mapping):
        for directory, project in projects.items():
            if isinstance(project, Mapping):
                tables.append((f"/projects/{_escape(str(directory))}/mcpServers", project.get("mcpServers")))
    for prefix, table in tables:
        if isinstance(table, Mapping):
            for name, entry in table.items():
                yield f"{prefix}/{_escape(str(name))}", str(name), entry


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items() if v is not None}


def _entry(client: str, path: Path, pointer: str, name: str, entry: object) -> ServerEntry | str:
    """One server entry, or why it is not one."""
    if not isinstance(entry, Mapping):
        return "a server entry must be an object"
    command: object = entry.get("command")
    args: object = entry.get("args", [])
    env: object = entry.get("env", {})
    if isinstance(command, Mapping):  # Zed's older form: {"command": {"path", "args", "env"}}
        args, env, command = command.get("args", []), command.get("env", {}), command.get("path")
    url = entry.get("url") or entry.get("serverUrl") or entry.get("httpUrl")
    kind = str(entry.get("type") or entry.get("transport") or "").lower()
    headers = _strings(entry.get("headers"))
    if isinstance(url, str) and url:
        transport: Transport = "sse" if kind == "sse" or (not kind and url.rstrip("/").endswith("/sse")) else "http"
        return ServerEntry(client, path, pointer, name, transport, url=url, headers=headers, env=_strings(env))
    if isinstance(command, str) and command:
        arg_list = tuple(str(a) for a in args) if isinstance(args, list) else ()
        cwd = entry.get("cwd")
        return ServerEntry(client, path, pointer, name, "stdio", command=command, args=arg_list, env=_strings(env),
                           cwd=cwd if isinstance(cwd, str) else None)  # fmt: skip
    return "neither a command nor a url"
