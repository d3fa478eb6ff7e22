"""``bastion users hash | add``: the local users file, a development sign-in method for ``bastion demo``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import fail, out
from bastion.errors import ConfigError
from bastion.oauth.users import add_user, hash_password

__all__ = ["app"]

app = typer.Typer(
    help="Manage the local users file (development sign-in; use an OpenID Connect provider in production).",
    no_args_is_help=True,
)

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
]


def _read_password(from_stdin: bool) -> str:
    """The password from one stdin line, or from a hidden prompt asked twice. Exits 2 when empty."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise fail("the password is empty")
    return password


@app.command("hash")
def hash_(password_stdin: PasswordStdin = False) -> None:
    """Print the argon2id hash of a password, for password_hash in a users file."""
    out.print(hash_password(_read_password(password_stdin)), soft_wrap=True, markup=False)


@app.command()
def add(
    file: Annotated[Path, typer.Option("--file", "-f", help="The users file (created if missing).")],
    username: Annotated[str, typer.Option(help="The sign-in name.")],
    sub: Annotated[str | None, typer.Option(help="Subject claim (default: the username).")] = None,
    email: Annotated[str | None, typer.Option(help="Email claim.")] = None,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    group: Annotated[list[str] | None, typer.Option(help="Group (repeatable).")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add USERNAME to the users file, or replace the user of that name; other users are kept."""
    password = _read_password(password_stdin)
    try:
        replaced = add_user(
            file,
            username=username,
            password_hash=hash_password(password),
            sub=sub,
            email=email,
            name=name,
            groups=group or (),
        )
    except ConfigError as exc:
        raise fail(exc.message) from None
    out.print(f"{'replaced' if replaced else 'added'} {username} in {file}", soft_wrap=True, markup=False)
