"""``bastion consent list | revoke``: the approvals users gave clients at the consent page.

Revoking a consent also revokes every refresh-token family of that user and client (and
their unexpired access tokens, within 50 ms on a running gateway), so the client must
send the user through sign-in and consent again.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.oauth.records import Consent
from bastion.stores.backends import authorization_store, postgres_database, preflight, revocation_store

__all__ = ["app"]

app = typer.Typer(help="List and revoke remembered consents.", no_args_is_help=True)


async def _list(settings: BastionConfig, sub: str | None) -> list[Consent]:
    async with authorization_store(settings, postgres_database(settings)) as store:
        return await store.list_consents(sub)


async def _revoke(settings: BastionConfig, sub: str, client_id: str | None) -> tuple[int, int]:
    postgres = postgres_database(settings)  # one pool for both stores (stores.postgres), else None
    store = authorization_store(settings, postgres)
    await store.start()
    try:
        consents = await store.delete_consents(sub, client_id)
        families = await store.families_of(sub, client_id)
        now = datetime.datetime.now(datetime.UTC).timestamp()
        async with revocation_store(settings, postgres) as revocations:
            for family_id in families:
                for jti, expires_at in await store.revoke_family(family_id, now):
                    await revocations.revoke(jti, expires_at)
        return consents, len(families)
    finally:
        await store.close()


@app.command("list")
def list_consents(
    config: ConfigOption = Path("bastion.yaml"),
    sub: Annotated[str | None, typer.Option(help="Only this user's consents.")] = None,
) -> None:
    """List remembered consents (user, client, route, scopes, when)."""
    settings = load_or_exit(config)
    try:
        preflight(settings)
        consents = asyncio.run(_list(settings, sub))
    except ConfigError as exc:
        raise fail(exc.message) from None
    table = Table(title="consents")
    for column in ("user", "client", "route", "scopes", "granted (UTC)"):
        table.add_column(column)
    for consent in consents:
        when = datetime.datetime.fromtimestamp(consent.granted_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(consent.sub, consent.client_id, consent.route, " ".join(consent.scopes), when)
    out.print(table)


@app.command()
def revoke(
    sub: Annotated[str, typer.Option(help="The user whose consent is revoked.")],
    config: ConfigOption = Path("bastion.yaml"),
    client: Annotated[str | None, typer.Option(help="Only this client (default: every client).")] = None,
) -> None:
    """Forget USER's consents (for one client or all) and revoke the tokens granted with them."""
    settings = load_or_exit(config)
    try:
        preflight(settings)
        consents, families = asyncio.run(_revoke(settings, sub, client))
    except ConfigError as exc:
        raise fail(exc.message) from None
    if consents == 0 and families == 0:
        raise fail(f"no consent or token of {sub}" + (f" for {client}" if client else ""), code=1)
    out.print(f"revoked {consents} consents and {families} token families of {sub}")
