"""The token vault: sealed at rest, bound to owner and route, single-use pending connections, key rotation."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from bastion.config.base import SecretRef
from bastion.config.credentials import VaultSettings
from bastion.credentials.vault import (
    PendingConnection,
    TokenSet,
    TokenVault,
    VaultKeys,
    generate_key,
)
from bastion.credentials.vault_sqlite import SQLiteVaultStore
from bastion.errors import ConfigError, VaultError

ACCESS = "upstream-access-token-4f0c2b8a9d"
REFRESH = "upstream-refresh-token-77e1aa03c5"
OWNER_A = "https://bastion.example\x1falice"
OWNER_B = "https://bastion.example\x1fbob"


def _keys(*texts: str) -> VaultKeys:
    raw = [base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) for text in texts]
    return VaultKeys(raw[0], tuple(raw[1:]))


def _tokens(access: str = ACCESS, refresh: str | None = REFRESH) -> TokenSet:
    return TokenSet(
        access_token=access,
        token_type="Bearer",
        issuer="https://as.example",
        client_id="bastion",
        refresh_token=refresh,
        expires_at=2_000_000_000.0,
        scope="notes:read",
    )


def _raw_bytes(directory: Path) -> bytes:
    """Every byte of the database file and its journals, as a thief copying the directory gets them."""
    return b"".join(path.read_bytes() for path in directory.iterdir() if path.name.startswith("bastion.db"))


@pytest.fixture
async def vault(tmp_path: Path):
    store = TokenVault(SQLiteVaultStore(tmp_path / "bastion.db"), _keys(generate_key()))
    await store.start()
    yield store
    await store.close()


async def test_tokens_round_trip_and_are_per_owner_and_route(vault: TokenVault) -> None:
    await vault.put(OWNER_A, "notes", _tokens(), now=100.0)
    assert await vault.get(OWNER_A, "notes") == _tokens()
    assert await vault.get(OWNER_B, "notes") is None
    assert await vault.get(OWNER_A, "other") is None
    connections = await vault.connections(OWNER_A)
    assert list(connections) == ["notes"]
    assert connections["notes"].refreshable is True
    assert connections["notes"].expires_at == 2_000_000_000.0
    assert await vault.delete(OWNER_A, "notes") is True
    assert await vault.get(OWNER_A, "notes") is None
    assert await vault.delete(OWNER_A, "notes") is False


async def test_the_file_read_raw_holds_no_token_in_clear(tmp_path: Path, vault: TokenVault) -> None:
    await vault.put(OWNER_A, "notes", _tokens(), now=100.0)
    await vault.put_client("notes", "https://as.example", {"client_id": "c1", "client_secret": "dcr-secret-5a5a5a"},
                           now=100.0)  # fmt: skip
    pending = PendingConnection(OWNER_A, "notes", "browser", "pkce-verifier-0b0b0b", "https://as.example", "c1",
                                "https://bastion.example/portal/callback", 10_000.0)  # fmt: skip
    await vault.put_pending("state-digest", pending)
    await vault.close()
    raw = _raw_bytes(tmp_path)
    for secret in (ACCESS, REFRESH, "dcr-secret-5a5a5a", "pkce-verifier-0b0b0b"):
        assert secret.encode() not in raw
    with sqlite3.connect(tmp_path / "bastion.db") as conn:
        (sealed,) = conn.execute("SELECT sealed FROM vault_tokens").fetchone()
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                  for t in ("vault_tokens", "vault_clients", "vault_pending")]  # fmt: skip
    assert counts == [1, 1, 1]  # the records are in the file that was read
    assert ACCESS.encode() not in sealed
    assert len(sealed) > len(ACCESS) + len(REFRESH)


async def test_a_sealed_record_moved_to_another_owner_does_not_open(tmp_path: Path, vault: TokenVault) -> None:
    await vault.put(OWNER_A, "notes", _tokens(), now=100.0)
    await vault.put(OWNER_B, "notes", _tokens("bob-token"), now=100.0)
    with sqlite3.connect(tmp_path / "bastion.db") as conn:
        (sealed,) = conn.execute("SELECT sealed FROM vault_tokens WHERE owner = ?", (OWNER_A,)).fetchone()
        conn.execute("UPDATE vault_tokens SET sealed = ? WHERE owner = ?", (sealed, OWNER_B))
    with pytest.raises(VaultError, match="does not verify"):
        await vault.get(OWNER_B, "notes")
    assert (await vault.get(OWNER_A, "notes")) == _tokens()


async def test_a_tampered_record_does_not_open(tmp_path: Path, vault: TokenVault) -> None:
    await vault.put(OWNER_A, "notes", _tokens(), now=100.0)
    with sqlite3.connect(tmp_path / "bastion.db") as conn:
        (sealed,) = conn.execute("SELECT sealed FROM vault_tokens").fetchone()
        flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
        conn.execute("UPDATE vault_tokens SET sealed = ?", (flipped,))
    with pytest.raises(VaultError):
        await vault.get(OWNER_A, "notes")


async def test_pending_connections_are_single_use_and_expire(vault: TokenVault) -> None:
    pending = PendingConnection(OWNER_A, "notes", "b", "v", "https://as.example", "c", "https://x/cb", 500.0)
    await vault.put_pending("d1", pending)
    await vault.put_pending("d2", pending)
    assert await vault.take_pending("d1", now=100.0) == pending
    assert await vault.take_pending("d1", now=100.0) is None
    assert await vault.take_pending("d2", now=600.0) is None  # expired
    assert await vault.take_pending("unknown", now=100.0) is None


async def test_rotation_reseals_every_record_with_the_current_key(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "bastion.db"
    first = TokenVault(SQLiteVaultStore(path), _keys(old))
    await first.start()
    await first.put(OWNER_A, "notes", _tokens(), now=1.0)
    await first.put_client("notes", "https://as.example", {"client_id": "c1"}, now=1.0)
    await first.close()

    assert _keys(new).current_id != _keys(old).current_id
    rotating = TokenVault(SQLiteVaultStore(path), _keys(new, old))
    await rotating.start()
    assert await rotating.get(OWNER_A, "notes") == _tokens()  # the previous key still opens it
    assert await rotating.rotate() == 2
    assert await rotating.rotate() == 0
    await rotating.close()

    only_new = TokenVault(SQLiteVaultStore(path), _keys(new))
    await only_new.start()
    assert await only_new.get(OWNER_A, "notes") == _tokens()
    assert await only_new.get_client("notes", "https://as.example") == {"client_id": "c1"}
    await only_new.close()

    only_old = TokenVault(SQLiteVaultStore(path), _keys(old))
    await only_old.start()
    with pytest.raises(VaultError, match="not configured"):
        await only_old.get(OWNER_A, "notes")
    await only_old.close()


def test_keys_come_from_references_and_must_be_32_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    assert len(key) == 43
    monkeypatch.setenv("VAULT_KEY", key)
    (tmp_path / "old").write_text(generate_key() + "\n")
    keys = VaultKeys.from_settings(
        VaultSettings(vault_key=SecretRef(env="VAULT_KEY"), previous_vault_keys=(SecretRef(file=tmp_path / "old"),))
    )
    assert keys.current_id == _keys(key).current_id
    monkeypatch.setenv("SHORT_KEY", "c2hvcnQ")
    with pytest.raises(ConfigError, match=r"credentials.vault_key: .*32 bytes"):
        VaultKeys.from_settings(VaultSettings(vault_key=SecretRef(env="SHORT_KEY")))
    with pytest.raises(ConfigError, match=r"credentials.vault_key: environment variable NOT_SET"):
        VaultKeys.from_settings(VaultSettings(vault_key=SecretRef(env="NOT_SET")))
    with pytest.raises(ConfigError, match="listed twice"):
        VaultKeys.from_settings(
            VaultSettings(vault_key=SecretRef(env="VAULT_KEY"), previous_vault_keys=(SecretRef(env="VAULT_KEY"),))
        )
    with pytest.raises(ConfigError, match="not configured"):
        VaultKeys.from_settings(VaultSettings())
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef()
