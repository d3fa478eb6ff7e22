"""Signed checkpoints of the audit chain: what makes cutting off the newest records detectable.

The hash chain shows a record modified, deleted, inserted or reordered, but not the newest ones
removed: the shorter chain is still a valid chain. A checkpoint is a statement, signed with a key of
its own, that the chain had reached sequence number ``seq`` with head hash ``hash`` at ``time``.
Kept apart from the log (the file ``audit.checkpoints.file``, one JSON object per line, meant to be
shipped elsewhere as it grows), it lets ``bastion audit verify`` refuse a log that ends before a
checkpoint, or whose record at a checkpoint's ``seq`` has another hash.

- **Signature**: a compact JWS (RFC 7515) over the canonical JSON of ``{"seq", "hash", "time"}``
  with Ed25519 (``alg`` ``Ed25519``, RFC 9864; joserfc), the key named by its RFC 7638 thumbprint
  (``kid``). Each line also repeats ``seq``, ``hash``, ``time`` and ``kid`` in clear for people;
  only the signed payload counts.
- **Keys**: ``<data_dir>/audit-checkpoint-keys.json`` (mode 0600): the current private key and the
  earlier ones, which keep verifying old checkpoints (a rotation never invalidates them).
  ``bastion audit checkpoint-keys`` prints the public keys (a JWK Set) to keep beside the
  checkpoints; ``bastion audit rotate-checkpoint-key`` starts a new key. The key is the gateway's
  own, distinct from the token signing keys.
- **When**: the gateway writes one when ``every_records`` records were committed since the last,
  or ``every_s`` seconds passed with at least one new record (``CheckpointWriter``).

Errors: ``bastion.errors.CheckpointInvalid`` for a line that does not parse or verify; key file
problems raise ``ConfigError``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from bastion.audit.canonical import canonical
from bastion.audit.chain import VerifyResult
from bastion.errors import CheckpointInvalid, ConfigError
from bastion.files import exclusive, replace_private

__all__ = [
    "CHECKPOINT_ALGORITHM",
    "KEYS_FILE",
    "Checkpoint",
    "CheckpointKeys",
    "CheckpointWriter",
    "check_log",
    "public_keys_from_jwks",
    "read_checkpoints",
    "verify_checkpoint",
]

CHECKPOINT_ALGORITHM = "Ed25519"
KEYS_FILE = "audit-checkpoint-keys.json"
_LOCK_FILE = "audit-checkpoint-keys.lock"
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified (or just signed) checkpoint: the chain had reached ``seq`` with head ``hash`` at
    ``time`` (RFC 3339 UTC); ``kid`` names the key, ``jws`` is the signed statement."""

    seq: int
    hash: str
    time: str
    kid: str
    jws: str

    def line(self) -> str:
        """The checkpoint as one JSON line of the checkpoints file."""
        return json.dumps({"seq": self.seq, "hash": self.hash, "time": self.time, "kid": self.kid,
                           "jws": self.jws}, separators=(",", ":"))  # fmt: skip


class CheckpointKeys:
    """The checkpoint signing keys of one data directory (see the module docstring): ``current``
    signs; every key verifies. Use :meth:`load_or_create`."""

    def __init__(self, path: Path, keys: list[tuple[OKPKey, int]]) -> None:
        self._path = path
        self._keys = keys  # (private key, created_at), oldest first; the last is current
        self._stat = _stat(path)

    @classmethod
    def load_or_create(cls, data_dir: Path, *, create: bool = True) -> CheckpointKeys:
        """Load ``<data_dir>/audit-checkpoint-keys.json``, creating it with a first key if missing
        (unless ``create`` is false: then a missing file is a ``ConfigError`` too). Raises
        ``ConfigError`` when it is unreadable, corrupt, or readable by group/others."""
        path = data_dir / KEYS_FILE
        if not path.exists():
            if not create:
                raise ConfigError(f"{path}: no checkpoint keys there")
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with exclusive(data_dir / _LOCK_FILE):  # workers starting together create one key, not two
                if not path.exists():
                    _write(path, [(OKPKey.generate_key("Ed25519", private=True), int(time.time()))])
        return cls(path, _read(path))

    @property
    def current(self) -> OKPKey:
        """The key that signs new checkpoints."""
        return self._keys[-1][0]

    def refresh(self) -> None:
        """Re-read the file if another process (``rotate-checkpoint-key``) changed it."""
        stat = _stat(self._path)
        if stat != self._stat:
            self._keys, self._stat = _read(self._path), stat

    def rotate(self) -> str:
        """Start a new current key (the old ones keep verifying); returns its ``kid``."""
        key = OKPKey.generate_key("Ed25519", private=True)
        with exclusive(self._path.parent / _LOCK_FILE):  # another rotation's key is kept, not overwritten
            self._keys = [*_read(self._path), (key, int(time.time()))]
            _write(self._path, self._keys)
        self._stat = _stat(self._path)
        return key.thumbprint()

    def public_keys(self) -> dict[str, OKPKey]:
        """Every key's public half by ``kid``."""
        return {key.thumbprint(): OKPKey.import_key(key.as_dict(private=False)) for key, _ in self._keys}

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWK Set (RFC 7517 section 5), each with ``kid``, ``use`` and ``alg``."""
        return {"keys": [{**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": CHECKPOINT_ALGORITHM}
                         for kid, key in self.public_keys().items()]}  # fmt: skip

    def sign(self, seq: int, head: str, at: float) -> Checkpoint:
        """A checkpoint of the chain at ``seq`` with head hash ``head``, made at ``at`` (epoch s)."""
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        key = self.current
        kid = key.thumbprint()
        payload = canonical({"seq": seq, "hash": head, "time": stamp})
        token = jws.serialize_compact({"alg": CHECKPOINT_ALGORITHM, "kid": kid}, payload, key,
                                      algorithms=[CHECKPOINT_ALGORITHM])  # fmt: skip
        return Checkpoint(seq, head, stamp, kid, token)


def public_keys_from_jwks(document: Mapping[str, Any]) -> dict[str, OKPKey]:
    """The Ed25519 public keys of a JWK Set by ``kid`` (their RFC 7638 thumbprint, checked). Raises
    ``CheckpointInvalid`` for a key that is not an Ed25519 public key or whose ``kid`` does not match."""
    keys: dict[str, OKPKey] = {}
    for entry in document.get("keys", ()):
        try:
            key = OKPKey.import_key({k: v for k, v in entry.items() if k not in ("kid", "use", "alg", "d")})
        except (JoseError, ValueError, TypeError) as exc:
            raise CheckpointInvalid(f"not an Ed25519 public key: {exc}") from None
        if key.curve_name != "Ed25519" or key.thumbprint() != entry.get("kid"):
            raise CheckpointInvalid(f"key {entry.get('kid')!r} is not the Ed25519 key its kid names")
        keys[key.thumbprint()] = key
    return keys


def verify_checkpoint(line: str, keys: Mapping[str, OKPKey]) -> Checkpoint:
    """Parse one line of the checkpoints file and verify its signature with ``keys`` (by ``kid``).
    Returns the checkpoint as SIGNED (the clear copy is ignored); raises ``CheckpointInvalid``."""
    try:
        token = json.loads(line)["jws"]
        headers = jws.extract_compact(token.encode("ascii")).headers()
    except (ValueError, KeyError, TypeError, AttributeError, JoseError) as exc:
        raise CheckpointInvalid(f"not a checkpoint: {exc}") from None
    kid = headers.get("kid")
    if not isinstance(kid, str) or kid not in keys or headers.get("alg") != CHECKPOINT_ALGORITHM:
        raise CheckpointInvalid(f"checkpoint signed with an unknown key {kid!r}")
    key = keys[kid]
    try:
        payload = json.loads(jws.deserialize_compact(token, key, algorithms=[CHECKPOINT_ALGORITHM]).payload)
        seq, head, stamp = payload["seq"], payload["hash"], payload["time"]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointInvalid(f"checkpoint signature does not verify: {exc}") from None
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(head, str) or not isinstance(stamp, str):
        raise CheckpointInvalid("checkpoint payload is not {seq: int, hash: str, time: str}")
    return Checkpoint(seq, head, stamp, kid, token)


def read_checkpoints(path: Path, keys: Mapping[str, OKPKey]) -> list[Checkpoint]:
    """Every checkpoint of the file at ``path``, verified, in file order (a missing file: none).
    Raises ``CheckpointInvalid`` naming the first line that does not verify."""
    if not path.exists():
        return []
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                found.append(verify_checkpoint(line, keys))
            except CheckpointInvalid as exc:
                raise CheckpointInvalid(f"{path}:{number}: {exc.message}") from None
    return found


def check_log(
    chain: VerifyResult, checkpoints: Iterable[Checkpoint], hash_at: Callable[[int], str | None]
) -> VerifyResult:
    """``chain`` (the log's own verification) held against verified ``checkpoints``: a log that ends
    before a checkpoint's ``seq`` was cut off ("truncated"); a record at a checkpoint's ``seq`` whose
    hash (``hash_at``) differs was replaced ("modified"). Returns ``chain`` itself when it already
    failed or every checkpoint holds (its message then names the newest checkpoint)."""
    if not chain.ok:
        return chain
    newest: Checkpoint | None = None
    for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
        if checkpoint.seq > chain.last_seq:
            return VerifyResult(
                ok=False, checked=chain.checked, first_bad_seq=chain.last_seq + 1, problem="truncated",
                message=(f"FAILED at seq {chain.last_seq + 1}: truncated: the log ends at seq {chain.last_seq} but "
                         f"a checkpoint signed at {checkpoint.time} covers seq {checkpoint.seq}"),
                last_seq=chain.last_seq, last_hash=chain.last_hash,
            )  # fmt: skip
        if hash_at(checkpoint.seq) != checkpoint.hash:
            return VerifyResult(
                ok=False, checked=chain.checked, first_bad_seq=checkpoint.seq, problem="modified",
                message=(f"FAILED at seq {checkpoint.seq}: modified: the record differs from the one a "
                         f"checkpoint signed at {checkpoint.time}"),
                last_seq=chain.last_seq, last_hash=chain.last_hash,
            )  # fmt: skip
        newest = checkpoint
    if newest is None:
        return chain
    message = (f"OK: {chain.checked} records, chain intact up to seq {chain.last_seq} (hash {chain.last_hash[:16]}); "
               f"the newest signed checkpoint ({newest.time}) covers seq {newest.seq}")  # fmt: skip
    return VerifyResult(ok=True, checked=chain.checked, message=message, last_seq=chain.last_seq,
                        last_hash=chain.last_hash)  # fmt: skip


class CheckpointWriter:
    """Appends a checkpoint to ``path`` (fsynced) when ``every_records`` records were committed since
    the last one, or ``every_s`` seconds passed with at least one new record (``maybe_write``)."""

    def __init__(self, keys: CheckpointKeys, path: Path, *, every_records: int, every_s: float) -> None:
        self._keys = keys
        self.path = path
        self._every_records = every_records
        self._every_s = every_s
        self._last_seq = 0
        self._last_at = time.monotonic()

    async def maybe_write(self, seq: int, head: str, *, force: bool = False) -> Checkpoint | None:
        """Write a checkpoint of head ``(seq, head)`` if one is due (with ``force``: whenever the chain
        moved on since the last, as at shutdown); returns it, or None."""
        now = time.monotonic()
        if seq <= self._last_seq:
            return None
        if not force and seq - self._last_seq < self._every_records and now - self._last_at < self._every_s:
            return None
        checkpoint = await asyncio.to_thread(self._write, seq, head)
        self._last_seq, self._last_at = seq, now
        return checkpoint

    def _write(self, seq: int, head: str) -> Checkpoint:
        self._keys.refresh()
        checkpoint = self._keys.sign(seq, head, time.time())
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (checkpoint.line() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return checkpoint


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def _read(path: Path) -> list[tuple[OKPKey, int]]:
    if os.stat(path).st_mode & 0o077:
        raise ConfigError(f"{path}: readable by group or others; chmod 600 it")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        keys = [(OKPKey.import_key(entry["jwk"]), int(entry["created_at"])) for entry in document["keys"]]
    except (OSError, ValueError, KeyError, TypeError, JoseError) as exc:
        raise ConfigError(f"{path}: unreadable checkpoint key file: {exc}") from None
    if not keys or any(not key.is_private or key.curve_name != "Ed25519" for key, _ in keys):
        raise ConfigError(f"{path}: the checkpoint keys must be private Ed25519 keys")
    return keys


def _write(path: Path, keys: Iterable[tuple[OKPKey, int]]) -> None:
    document = {"version": _FORMAT_VERSION,
                "keys": [{"kid": key.thumbprint(), "created_at": created, "jwk": key.as_dict(private=True)}
                         for key, created in keys]}  # fmt: skip
    replace_private(path, json.dumps(document).encode())
