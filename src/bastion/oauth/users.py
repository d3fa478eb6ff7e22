"""The local users file: a DEVELOPMENT sign-in method for ``bastion demo``.

Not for production. In production Bastion's authorization server signs people
in through an OpenID Connect provider; this file exists so that the demo and
local development work without one. Loading it logs a WARNING that says so.

The file is YAML::

    users:
      - username: alice
        password_hash: "$argon2id$v=19$m=65536,t=3,p=4$..."
        sub: alice            # optional, defaults to the username
        email: alice@example.com
        name: Alice Example
        groups: [engineering]

``password_hash`` is an argon2id PHC string (RFC 9106) made by
``bastion users hash``; a plaintext password is refused. Passwords are hashed
and verified with argon2-cffi's ``PasswordHasher`` using the RFC 9106 section 4
second recommended option (``RFC_9106_LOW_MEMORY``: t=3, m=64 MiB, p=4).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from argon2 import PasswordHasher, extract_parameters, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bastion.errors import ConfigError
from bastion.files import replace_private
from bastion.stores.counters import RateCounter

__all__ = ["LocalUser", "LocalUsers", "SignInThrottle", "add_user", "hash_password"]

logger = logging.getLogger(__name__)

_HASHER = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)

# The hash of a random password nobody knows, made with the parameters of ``_HASHER``. An unknown
# username is verified against it so that the answer takes as long as for a known one.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$E32GZxfkR6SCGW4r4p/CKg$4PmPWUsxdi8kA5r7SDjt/KuoFHgT5SxxcjZMFFmXLTg"

_HASH_SOURCE = "an argon2id hash from `bastion users hash` (a PHC string starting with $argon2id$)"


@dataclass(frozen=True, slots=True)
class LocalUser:
    """A signed-in local user: what the authorization server puts in the tokens it issues."""

    sub: str
    username: str
    email: str | None
    name: str | None
    groups: tuple[str, ...]


class _UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(pattern=r"^\S+$")
    password_hash: str
    sub: str | None = Field(default=None, pattern=r"^\S+$")
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _no_plaintext(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise PydanticCustomError(
                "plaintext_password", f"a plaintext `password` is not accepted; set `password_hash` to {_HASH_SOURCE}"
            )
        return data

    @model_validator(mode="after")
    def _not_a_provider_subject(self) -> _UserEntry:
        # Subjects from identity providers are "<provider>:<sub>": a local subject with a colon
        # could be the same Cedar principal (and session owner) as a provider's user.
        if ":" in (self.sub or self.username):
            raise PydanticCustomError(
                "subject_colon",
                "a local subject may not contain ':' (reserved for identity providers' subjects, "
                "'<provider>:<sub>'); set `sub` to one without it",
            )
        return self

    @field_validator("password_hash")
    @classmethod
    def _argon2id(cls, value: str) -> str:
        if not value.startswith("$argon2id$"):
            raise PydanticCustomError("argon2id_hash", f"must be {_HASH_SOURCE}")
        try:
            extract_parameters(value)
        except InvalidHashError:
            raise PydanticCustomError("argon2id_hash", f"must be {_HASH_SOURCE}") from None
        return value

    @property
    def user(self) -> LocalUser:
        return LocalUser(self.sub or self.username, self.username, self.email, self.name, self.groups)


class _UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[_UserEntry, ...] = ()


def _read(path: Path, *, missing_ok: bool = False) -> _UsersFile:
    """Read and validate ``path``; ``ConfigError`` names the file and the place of the error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if missing_ok:
            return _UsersFile()
        raise ConfigError(f"{path}: cannot read the users file: {exc.strerror}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): the users file must be a mapping with a `users` list")
    try:
        parsed = _UsersFile.model_validate(data)
    except ValidationError as exc:
        places = (".".join(str(p) for p in err["loc"]) or "(top level)" for err in exc.errors())
        messages = (err["msg"] for err in exc.errors())
        raise ConfigError("\n".join(f"{path}: {p}: {m}" for p, m in zip(places, messages, strict=True))) from exc
    _check_unique(path, parsed)
    return parsed


def _check_unique(path: Path, parsed: _UsersFile) -> None:
    usernames: dict[str, int] = {}
    subs: dict[str, int] = {}
    for index, entry in enumerate(parsed.users):
        if entry.username in usernames:
            raise ConfigError(
                f"{path}: users.{index}.username: duplicate username {entry.username!r} "
                f"(also users.{usernames[entry.username]})"
            )
        sub = entry.user.sub
        if sub in subs:
            raise ConfigError(f"{path}: users.{index}.sub: duplicate sub {sub!r} (also users.{subs[sub]})")
        usernames[entry.username] = index
        subs[sub] = index


class LocalUsers:
    """The users of a local users file, verified with argon2id (RFC 9106).

    A development sign-in method only (see the module docstring).
    """

    def __init__(self, accounts: Iterable[tuple[LocalUser, str]]) -> None:
        """Hold ``(user, argon2id password hash)`` pairs. Raises ``ValueError`` on a duplicate username."""
        self._accounts: dict[str, tuple[LocalUser, str]] = {}
        for user, password_hash in accounts:
            if user.username in self._accounts:
                raise ValueError(f"duplicate username {user.username!r}")
            self._accounts[user.username] = (user, password_hash)

    @classmethod
    def load(cls, path: Path) -> LocalUsers:
        """Read the users file at ``path`` and log a WARNING that it is a development sign-in method.

        Raises ``ConfigError`` naming the file and the place (``users.yaml: users.1.password_hash: ...``)
        when the file is missing, is not YAML, has unknown keys, a plaintext password, a hash that is not
        argon2id, or a duplicate username or sub.
        """
        parsed = _read(path)
        logger.warning(
            "local users file %s loaded: password sign-in is a development method; "
            "use an OpenID Connect provider in production",
            path,
        )
        return cls((entry.user, entry.password_hash) for entry in parsed.users)

    @property
    def usernames(self) -> tuple[str, ...]:
        """The usernames, in file order."""
        return tuple(self._accounts)

    def verify(self, username: str, password: str) -> LocalUser | None:
        """Return the user when ``password`` is theirs, else ``None``; never raises on bad input.

        An unknown ``username`` is verified against a fixed dummy hash with the same argon2id parameters,
        so the answer takes the same time whether or not the user exists (for hashes made by
        ``hash_password``, which all use those parameters).
        """
        account = self._accounts.get(username)
        password_hash = account[1] if account is not None else _DUMMY_HASH
        try:
            _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError, UnicodeEncodeError):
            return None
        return account[0] if account is not None else None


class SignInThrottle:
    """Bounds password guessing per username: at most ``max_attempts`` sign-ins that did not
    succeed within ``window_s`` seconds; further attempts for that name are refused until the
    oldest leaves the window (OWASP ASVS 4.0 V2.2.1). A success clears the name.

    Every attempt is counted BEFORE the password is checked (``attempt``), in one atomic step
    of ``counter`` under the key ``sign-in:<username>``, so guesses sent in parallel cannot all
    pass the check while the first ones are still being hashed. With the embedded
    ``MemoryRateCounter`` the count is per process (an attacker gets ``max_attempts`` per
    replica per window, and at most the counter's ``max_keys`` names are tracked); with a
    shared counter, one count for every replica. Times are epoch seconds.
    """

    def __init__(self, counter: RateCounter, *, max_attempts: int = 5, window_s: float = 300.0) -> None:
        self._counter = counter
        self._max_attempts = max_attempts
        self._window_s = window_s

    async def attempt(self, username: str, now: float) -> float | None:
        """Count a sign-in attempt for ``username`` at ``now``: None when it may go ahead, else
        the seconds until it may try again (the attempt is then not counted)."""
        decision = await self._counter.hit(_throttle_key(username), self._max_attempts, self._window_s, now=now)
        return None if decision.allowed else decision.retry_after_s

    async def succeeded(self, username: str) -> None:
        """Forget the attempts of ``username`` (its password was right)."""
        await self._counter.reset(_throttle_key(username))


def _throttle_key(username: str) -> str:
    return "sign-in:" + username


def hash_password(password: str) -> str:
    """Hash ``password`` with argon2id (RFC 9106, low-memory profile) and return the PHC string.

    Raises ``ValueError`` for an empty password.
    """
    if not password:
        raise ValueError("the password is empty")
    return _HASHER.hash(password)


def add_user(
    path: Path,
    *,
    username: str,
    password_hash: str,
    sub: str | None = None,
    email: str | None = None,
    name: str | None = None,
    groups: Iterable[str] = (),
) -> bool:
    """Add the user to the users file at ``path`` (created if missing, mode 0600), or replace the user
    with the same username; other users are kept. Returns whether a user was replaced.

    Raises ``ConfigError`` when the existing file or the new entry is invalid (the file is then left as it
    was), naming the file and the place.
    """
    current = _read(path, missing_ok=True)
    try:
        entry = _UserEntry(
            username=username, password_hash=password_hash, sub=sub, email=email, name=name, groups=tuple(groups)
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "(entry)"
        raise ConfigError(f"{path}: {place}: {first['msg']}") from exc
    replaced = any(u.username == username for u in current.users)
    users = [entry if u.username == username else u for u in current.users]
    if not replaced:
        users.append(entry)
    updated = _UsersFile(users=tuple(users))
    _check_unique(path, updated)
    _write(path, updated)
    return replaced


def _write(path: Path, users: _UsersFile) -> None:
    """Replace ``path`` atomically with ``users``; the new file is readable by its owner only."""
    text = yaml.safe_dump(users.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)
    try:
        replace_private(path, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the users file: {exc.strerror or exc}") from exc
