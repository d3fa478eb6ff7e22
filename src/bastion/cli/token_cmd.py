"""``bastion token mint | revoke``: short-lived access tokens for a route."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.identity import SigningKeys, TokenIssuer, parse_duration
from bastion.stores.backends import postgres_database, preflight, revocation_store

__all__ = ["app"]

app = typer.Typer(help="Mint and revoke access tokens.", no_args_is_help=True)

_PATH = ConfigOption


@app.command()
def mint(
    sub: Annotated[str, typer.Option(help="Subject (user or service account id).")],
    route: Annotated[str, typer.Option(help="Route the token is for (its audience).")],
    config: _PATH = Path("bastion.yaml"),
    email: Annotated[str | None, typer.Option(help="Email claim.")] = None,
    group: Annotated[list[str] | None, typer.Option(help="Group (repeatable).")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 15m, 1h.")] = "15m",
    client_id: Annotated[str, typer.Option(help="The client_id claim (the OAuth client).")] = "bastion-cli",
    service_account: Annotated[bool, typer.Option(help="Mint for a ServiceAccount.")] = False,
    show_claims: Annotated[bool, typer.Option(help="Print the claims to stderr.")] = False,
) -> None:
    """Mint an RFC 9068 access token for ROUTE and print it."""
    settings = load_or_exit(config)
    try:
        target = settings.route(route)
        ttl_s = parse_duration(ttl)
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None
    try:
        keys = SigningKeys.load_or_create(settings.data_dir, verify_window_s=settings.identity.max_token_ttl,
                                          file=settings.identity.signing_keys_file)  # fmt: skip
    except ConfigError as exc:
        raise fail(exc.message) from None
    issuer = TokenIssuer(keys, settings.issuer, settings.identity.max_token_ttl)
    try:
        minted = issuer.mint(
            sub=sub,
            audience=settings.resource_uri(target),
            ttl_s=ttl_s,
            email=email,
            groups=group or (),
            client_id=client_id,
            kind="ServiceAccount" if service_account else "User",
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    if show_claims:
        typer.echo(str(minted.claims), err=True)
    out.print(minted.token, soft_wrap=True)


async def _revoke(settings: BastionConfig, jti: str, expires_at: int) -> None:
    async with revocation_store(settings, postgres_database(settings)) as revocations:
        await revocations.revoke(jti, expires_at)


@app.command()
def revoke(
    jti: Annotated[str, typer.Argument(help="The token's jti claim.")],
    config: _PATH = Path("bastion.yaml"),
) -> None:
    """Revoke one token by its ``jti``; the running gateway refuses it on the next request."""
    settings = load_or_exit(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        preflight(settings)
        asyncio.run(_revoke(settings, jti, int(time.time()) + settings.identity.max_token_ttl))
    except ConfigError as exc:
        raise fail(exc.message) from None
    out.print(f"revoked {jti}")


@app.command("rotate-keys")
def rotate_keys(config: _PATH = Path("bastion.yaml")) -> None:
    """Make a new signing key current; the old one verifies until its tokens have expired.

    With ``identity.signing_keys_file`` this creates or rotates that file (where it is writable: the copy
    you roll out to every replica, which re-read it when it changes)."""
    settings = load_or_exit(config)
    try:
        keys = SigningKeys.load_or_create(settings.data_dir, verify_window_s=settings.identity.max_token_ttl,
                                          file=settings.identity.signing_keys_file, create=True)  # fmt: skip
        old = keys.current.kid
        new = keys.rotate().kid
    except ConfigError as exc:
        raise fail(exc.message) from None
    except OSError as exc:
        raise fail(f"{keys.path}: cannot write the signing keys: {exc.strerror}") from None
    out.print(f"signing key {new} is current; {old} stays valid for verification for "
              f"{settings.identity.max_token_ttl}s")
