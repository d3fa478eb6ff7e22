"""``bastion credentials generate-key | rotate | list``: the token vault's key and its connections.

Key rotation: generate a new key, make it ``credentials.vault_key`` and move the old one to
``credentials.previous_vault_keys``, restart (records open with either key), run ``bastion
credentials rotate`` (every record re-sealed with the new key), then drop the old key.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.credentials.vault import Connection, TokenVault, VaultKeys, generate_key
from bastion.errors import ConfigError, VaultError
from bastion.stores.backends import postgres_database, preflight, vault_store

__all__ = ["app"]

app = typer.Typer(help="The token vault: its key, rotation, and who connected what.", no_args_is_help=True)


def _vault(config: Path) -> TokenVault:
    """The vault the gateway of ``config`` uses (``stores.postgres`` when set, checked to answer)."""
    settings = load_or_exit(config)
    try:
        keys = VaultKeys.from_settings(settings.credentials)
        preflight(settings)
        return TokenVault(vault_store(settings, postgres_database(settings)), keys)
    except ConfigError as exc:
        raise fail(exc.message) from None


@app.command("generate-key")
def generate() -> None:
    """Print a new vault key (32 random bytes, base64url) to put in a secret store."""
    out.print(generate_key(), markup=False, highlight=False)


@app.command()
def rotate(config: ConfigOption = Path("bastion.yaml")) -> None:
    """Re-seal every vault record with the current vault_key (previous_vault_keys must still open them)."""
    vault = _vault(config)

    async def run() -> int:
        await vault.start()
        try:
            return await vault.rotate()
        finally:
            await vault.close()

    try:
        count = asyncio.run(run())
    except VaultError as exc:
        raise fail(f"{exc.message}; nothing was changed (list the key that sealed it in previous_vault_keys)") from None
    out.print(f"re-sealed {count} records with the current key; previous_vault_keys can now be removed")


@app.command("list")
def list_connections(
    owner: Annotated[str, typer.Option(help="The user's subject (sub), as in audit records.")],
    config: ConfigOption = Path("bastion.yaml"),
    issuer: Annotated[str | None, typer.Option(help="The token issuer (default: Bastion's).")] = None,
) -> None:
    """List one user's upstream connections (route, since, token expiry); never the tokens."""
    settings = load_or_exit(config)
    vault = _vault(config)
    key = f"{issuer or settings.issuer}\x1f{owner}"

    async def run() -> dict[str, Connection]:
        await vault.start()
        try:
            return await vault.connections(key)
        finally:
            await vault.close()

    table = Table(title=f"connections of {owner}")
    for column in ("route", "connected (UTC)", "token expires (UTC)", "refreshable"):
        table.add_column(column)

    def when(epoch: float | None) -> str:
        if epoch is None:
            return "-"
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")

    for route, connection in sorted(asyncio.run(run()).items()):
        refreshable = "yes" if connection.refreshable else "no"
        table.add_row(route, when(connection.connected_at), when(connection.expires_at), refreshable)
    out.print(table)
