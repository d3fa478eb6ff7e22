"""Private files in the data directory that several processes share (key files): replaced atomically,
readable by their owner only, and changed under a lock so that two processes (the gateway's workers,
the CLI) never lose each other's writes.

- ``replace_private(path, data)``: write ``data`` to a new file (mode 0600) beside ``path``, fsync it,
  rename it over ``path`` and fsync the directory; a reader sees the old file or the new one, never a
  part, and a crash leaves one of the two. The scratch file is removed if anything fails.
- ``exclusive(lock)``: hold an exclusive ``flock`` on the file ``lock`` (created 0600) for a
  read-modify-write of the files it guards.

Both raise ``OSError`` as the system does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive", "replace_private"]


def replace_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably, mode 0600 (module docstring)."""
    directory = path.parent
    scratch = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` (created 0600 if missing) while the block runs."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
