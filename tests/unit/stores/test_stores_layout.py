"""Nothing outside a store touches SQLite: only the embedded backends import ``sqlite3``."""

from __future__ import annotations

import ast
from pathlib import Path

import bastion

SRC = Path(bastion.__file__).parent

#: The embedded SQLite backends (and their shared connection code); nothing else may import sqlite3.
SQLITE_BACKENDS = {
    "stores/sqlite.py",
    "identity/revocation.py",
    "oauth/store_sqlite_flows.py",
    "oauth/store_sqlite_grants.py",
    "credentials/vault_sqlite.py",
    "audit/store_sqlite.py",
    "audit/query.py",
}


def _imports_sqlite(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "sqlite3" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlite3":
            return True
    return False


def test_only_the_sqlite_backends_import_sqlite3() -> None:
    importing = {path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py") if _imports_sqlite(path)}
    assert importing == SQLITE_BACKENDS
