"""Bastion's ES256 signing keys: one current key, recently retired keys, the public JWK Set.

The keys live in ``<data_dir>/signing-keys.json`` (mode 0600, replaced
atomically), shared by the gateway and the ``bastion`` CLI, or in the file
``identity.signing_keys_file`` names: one file every replica mounts (a Kubernetes
Secret, mode 0400), which the gateway only reads, re-reading it when it changes, and
which ``bastion token rotate-keys`` creates and rotates where it is writable. Layout::

    {"version": 1, "keys": [{"kid": "<RFC 7638 thumbprint>", "created_at": 1700000000,
                             "retired_at": null, "jwk": {<private EC P-256 JWK>}}]}

A retired key still verifies tokens until ``retired_at + verify_window_s``
(the longest token lifetime), then it is pruned (RFC 7517 section 5 key set).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from bastion.errors import ConfigError
from bastion.files import exclusive, replace_private

__all__ = ["SIGNING_ALGORITHM", "SigningKey", "SigningKeys"]

SIGNING_ALGORITHM = "ES256"
KEYS_FILE = "signing-keys.json"
_LOCK_FILE = "signing-keys.lock"
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One ES256 (P-256) key pair; ``kid`` is its RFC 7638 thumbprint, times in epoch seconds."""

    kid: str
    created_at: int
    retired_at: int | None
    private_key: ECKey
    public_key: ECKey

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK (RFC 7517 section 4) with ``kid``, ``use`` and ``alg``; no private members."""
        jwk: dict[str, Any] = dict(self.public_key.as_dict(private=False))
        jwk.update(kid=self.kid, use="sig", alg=SIGNING_ALGORITHM)
        return jwk


def _new_key(now: int) -> SigningKey:
    private = ECKey.generate_key("P-256", private=True)
    public = ECKey.import_key(private.as_dict(private=False))
    return SigningKey(private.thumbprint(), now, None, private, public)


def _key_from_record(record: Any, path: Path) -> SigningKey:
    try:
        jwk = record["jwk"]
        private = ECKey.import_key(jwk)
        kid, created, retired = record["kid"], record["created_at"], record["retired_at"]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: unreadable signing key record") from exc
    if not private.is_private or private.curve_name != "P-256":
        raise ConfigError(f"{path}: key {kid!r} is not a private P-256 key")
    if kid != private.thumbprint():
        raise ConfigError(f"{path}: key id {kid!r} does not match its RFC 7638 thumbprint")
    if not isinstance(created, int) or not (retired is None or isinstance(retired, int)):
        raise ConfigError(f"{path}: key {kid!r} has invalid created_at/retired_at")
    public = ECKey.import_key(private.as_dict(private=False))
    return SigningKey(kid, created, retired, private, public)


class SigningKeys:
    """The signing key set of one Bastion data directory.

    Not thread-safe; one instance per process. Other processes (the CLI) may
    rotate the file: :meth:`refresh` picks their changes up.
    """

    def __init__(self, path: Path, verify_window_s: int, keys: list[SigningKey]) -> None:
        """Use :meth:`load_or_create`; this constructor does no I/O."""
        self._path = path
        self._verify_window_s = verify_window_s
        self._keys = keys
        self._stat: tuple[int, int] | None = None

    @classmethod
    def load_or_create(
        cls, data_dir: Path, *, verify_window_s: int, file: Path | None = None, create: bool | None = None
    ) -> SigningKeys:
        """Load ``<data_dir>/signing-keys.json`` (or ``file``), creating the directory and a first key if
        missing and ``create`` (default: only without ``file``: a file managed outside Bastion is never
        created by the gateway, which may see it read-only).

        ``verify_window_s`` (seconds, > 0) is how long a retired key keeps
        verifying: the maximum token lifetime. Raises ``ConfigError`` if the
        window is not positive, or the file is missing (and not to be created), unreadable, corrupt,
        has no current key, or is readable by group/others.
        """
        if isinstance(verify_window_s, bool) or not isinstance(verify_window_s, int) or verify_window_s <= 0:
            raise ConfigError(f"verify_window_s must be a positive integer (s), not {verify_window_s!r}")
        if create is None:
            create = file is None
        if file is None:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = cls(file or data_dir / KEYS_FILE, verify_window_s, [])
        if keys._path.exists():  # written by atomic replacement: read without the lock (it may be read-only)
            keys._load()
            return keys
        if not create:
            raise ConfigError(
                f"{keys._path}: no signing key file (identity.signing_keys_file); create it with "
                "`bastion token rotate-keys --config ...` where it is writable, then share it with every replica"
            )
        with keys._locked():
            if keys._path.exists():
                keys._load()
            else:
                keys._keys = [_new_key(int(time.time()))]
                keys._save()
        return keys

    @property
    def path(self) -> Path:
        """The key file's path."""
        return self._path

    @property
    def verify_window_s(self) -> int:
        """Seconds a retired key keeps verifying (the maximum token lifetime)."""
        return self._verify_window_s

    @property
    def current(self) -> SigningKey:
        """The key that signs new tokens."""
        return next(key for key in self._keys if key.retired_at is None)

    def rotate(self, now: float | None = None) -> SigningKey:
        """Make a new current key, retire the old one at ``now`` (epoch s), prune, save; return the new key.

        Re-reads the file under an exclusive lock first, so a rotation by
        another process is never lost. Raises ``OSError`` if the file cannot be written.
        """
        stamp = int(time.time() if now is None else now)
        with self._locked():
            self._load()
            keys = [replace(k, retired_at=stamp) if k.retired_at is None else k for k in self._keys]
            new = _new_key(stamp)
            self._keys = [new, *self._live(keys, stamp)]
            self._save()
        return new

    def prune(self, now: float | None = None) -> int:
        """Drop retired keys whose window ended before ``now``; save if any went. Returns how many."""
        stamp = int(time.time() if now is None else now)
        with self._locked():
            self._load()
            live = self._live(self._keys, stamp)
            dropped = len(self._keys) - len(live)
            if dropped:
                self._keys = live
                self._save()
        return dropped

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        """The public JWK Set (RFC 7517 section 5): ``{"keys": [<public JWK>, ...]}``, current key first.

        Contains the current key and retired keys still inside their
        verification window; never a private member (``d``).
        """
        stamp = time.time() if now is None else now
        return {"keys": [key.public_jwk() for key in self._live(self._keys, stamp)]}

    def verification_key(self, kid: str, now: float | None = None) -> ECKey | None:
        """The public key for ``kid`` if current or retired less than ``verify_window_s`` ago, else None."""
        stamp = time.time() if now is None else now
        for key in self._keys:
            if key.kid == kid:
                return key.public_key if self._is_live(key, stamp) else None
        return None

    def refresh(self) -> bool:
        """Reload the file if another process replaced it since we last read it; True if reloaded.

        Cheap when nothing changed (one ``stat``). Raises ``ConfigError`` on a corrupt file.
        """
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return False
        if (st.st_ino, st.st_mtime_ns) == self._stat:
            return False
        self._load()
        return True

    def _is_live(self, key: SigningKey, now: float) -> bool:
        return key.retired_at is None or now < key.retired_at + self._verify_window_s

    def _live(self, keys: list[SigningKey], now: float) -> list[SigningKey]:
        return [key for key in keys if self._is_live(key, now)]

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        name = _LOCK_FILE if self._path.name == KEYS_FILE else f"{self._path.name}.lock"
        return exclusive(self._path.parent / name)

    def _load(self) -> None:
        path = self._path
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                raw = fh.read()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read signing keys: {exc.strerror}") from exc
        if st.st_mode & 0o077:
            raise ConfigError(f"{path}: signing keys must not be readable by group or others (chmod 600)")
        try:
            document = json.loads(raw)
            records = document["keys"]
            version = document["version"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: not a Bastion signing key file") from exc
        if version != _FORMAT_VERSION or not isinstance(records, list):
            raise ConfigError(f"{path}: unsupported signing key file version {version!r}")
        keys = [_key_from_record(record, path) for record in records]
        if sum(1 for key in keys if key.retired_at is None) != 1:
            raise ConfigError(f"{path}: exactly one current (not retired) signing key is required")
        self._keys = keys
        self._stat = (st.st_ino, st.st_mtime_ns)

    def _save(self) -> None:
        records = [
            {
                "kid": k.kid,
                "created_at": k.created_at,
                "retired_at": k.retired_at,
                "jwk": dict(k.private_key.as_dict(private=True)),
            }
            for k in self._keys
        ]
        replace_private(self._path, json.dumps({"version": _FORMAT_VERSION, "keys": records}, indent=2).encode())
        st = self._path.stat()
        self._stat = (st.st_ino, st.st_mtime_ns)
