"""The demo's embedded configuration: three routes in front of real MCP servers.

- ``time``: the official ``mcp-server-time`` reference server (PyPI), over stdio;
- ``git``: the official ``mcp-server-git`` reference server (PyPI), over stdio,
  confined to a small repository the demo creates;
- ``notes``: ``bastion.demo.notes_server``, an MCP SDK server over Streamable HTTP.

Every route trusts its server's tool annotations for the risk (``trust_annotations``:
the reference servers and our own); the notes route's ``tools:`` map adds owners,
classifications and labels. Two users: alice (group ``engineering``) and bob (group
``support``), governed by ``demo.cedar`` shipped beside this module. They sign in to Bastion's
authorization server with passwords from a local users file (argon2id hashes;
a development sign-in method), and clients may register dynamically.
"""

from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bastion.config import BastionConfig, parse_config
from bastion.errors import ConfigError
from bastion.oauth.users import hash_password

__all__ = ["DEMO_USERS", "build_demo_config", "prepare_repository", "reference_server", "write_users_file"]

DEMO_USERS: dict[str, dict[str, Any]] = {
    "alice": {"email": "alice@example.com", "groups": ["engineering"]},
    "bob": {"email": "bob@example.com", "groups": ["support"]},
}


def reference_server(command: str) -> str:
    """The path of an installed reference server's console script (beside this Python).

    Raises ``ConfigError`` telling how to install it when it is missing.
    """
    candidate = Path(sys.executable).with_name(command)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(command)
    if found is None:
        raise ConfigError(f"{command} is not installed; run `pip install 'mcp-bastion[demo]'` (or `make demo`)")
    return found


def prepare_repository(path: Path) -> Path:
    """Create a small git repository at ``path`` for the git route (idempotent)."""
    git = shutil.which("git")
    if git is None:
        raise ConfigError("the demo's git route needs the `git` command")
    if (path / ".git").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("# Demo repository\n\nServed read-only through Bastion.\n", encoding="utf-8")
    identity = ["-c", "user.name=Bastion Demo", "-c", "user.email=demo@example.com"]
    for args in (["init", "-q"], ["add", "README.md"], [*identity, "commit", "-q", "-m", "Initial commit"]):
        subprocess.run([git, *args], cwd=path, check=True, capture_output=True)  # noqa: S603
    return path


def write_users_file(path: Path, passwords: dict[str, str]) -> Path:
    """Write the demo's users file: every ``DEMO_USERS`` entry with its password's argon2id hash."""
    users = [
        {"username": name, "password_hash": hash_password(passwords[name]), **info} for name, info in DEMO_USERS.items()
    ]
    path.write_text(yaml.safe_dump({"users": users}, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


def build_demo_config(root: Path, *, port: int, notes_url: str, passwords: dict[str, str]) -> BastionConfig:
    """The demo configuration, with its data, policy, users file and repository under ``root``.

    ``passwords`` maps each demo user to the password they sign in with.
    """
    root.mkdir(parents=True, exist_ok=True)
    users_file = write_users_file(root / "users.yaml", passwords)
    policies = root / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    policy_text = importlib.resources.files("bastion.demo").joinpath("demo.cedar").read_text(encoding="utf-8")
    (policies / "demo.cedar").write_text(policy_text, encoding="utf-8")
    repository = prepare_repository(root / "repo")
    data = {
        "data_dir": str(root / "data"),
        "server": {"host": "127.0.0.1", "port": port},
        "identity": {
            "max_token_ttl": "1h",
            "default_token_ttl": "15m",
            "authorization_server": {"users_file": str(users_file), "dynamic_registration": True},
        },
        "policy": {"files": [str(policies)]},
        "routes": [
            {
                "name": "time",
                "title": "Time (mcp-server-time, stdio)",
                "stdio": {"command": reference_server("mcp-server-time"), "args": ["--local-timezone", "UTC"]},
                "trust_annotations": True,  # the official reference servers describe their tools
            },
            {
                "name": "git",
                "title": "Git (mcp-server-git, stdio)",
                "stdio": {
                    "command": reference_server("mcp-server-git"),
                    "args": ["--repository", str(repository)],
                },
                "trust_annotations": True,
            },
            {
                "name": "notes",
                "title": "Ops notes (Streamable HTTP)",
                "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                "trust_annotations": True,  # our own server: its annotations give the risk
                "tools": {  # the inventory completes what the server says (resource.owner, ...)
                    "read_logs": {"owner": "sre", "classification": "internal", "labels": ["logs"]},
                    "search_notes": {"owner": "sre", "classification": "internal"},
                    "add_note": {"owner": "sre", "classification": "internal"},
                    "delete_note": {"owner": "sre", "classification": "internal", "labels": ["irreversible"]},
                },
            },
        ],
    }
    return parse_config(data, source="<demo>", base_dir=root)
