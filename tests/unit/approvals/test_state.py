"""Bastion's sealed ``requestState`` for confirmations: good for one principal, one set of arguments,
until its expiry, once; anything else opens to nothing."""

from __future__ import annotations

import stat
from pathlib import Path

from bastion.approvals.state import STATE_PREFIX, RequestStateSealer, is_bastion_state

NOW = 1_700_000_000.0
DIGEST = "a" * 64


def sealer(clock: list[float]) -> RequestStateSealer:
    return RequestStateSealer(b"k" * 32, clock=lambda: clock[0])


def test_a_state_opens_once_for_its_principal_and_arguments() -> None:
    clock = [NOW]
    states = sealer(clock)
    state = states.seal("apr1", principal_key="iss\x1frita", arguments_sha256=DIGEST, expires_at=NOW + 60)
    assert is_bastion_state(state)
    assert state.startswith(STATE_PREFIX)
    assert states.open(state, principal_key="iss\x1frita", arguments_sha256=DIGEST) == "apr1"
    assert states.open(state, principal_key="iss\x1frita", arguments_sha256=DIGEST) is None  # replayed


def test_anything_else_opens_to_nothing() -> None:
    clock = [NOW]
    states = sealer(clock)

    def fresh() -> str:
        return states.seal("apr1", principal_key="iss\x1frita", arguments_sha256=DIGEST, expires_at=NOW + 60)

    assert states.open(fresh(), principal_key="iss\x1fmallory", arguments_sha256=DIGEST) is None
    assert states.open(fresh(), principal_key="iss\x1frita", arguments_sha256="b" * 64) is None
    state = fresh()
    payload, mac = state[len(STATE_PREFIX) :].split(".")
    flipped = "B" if mac[0] == "A" else "A"  # the first character: all six of its bits are in the MAC
    assert states.open(f"{STATE_PREFIX}{payload}.{flipped}{mac[1:]}", principal_key="iss\x1frita",
                       arguments_sha256=DIGEST) is None  # fmt: skip
    other = RequestStateSealer(b"o" * 32, clock=lambda: clock[0])
    assert other.open(fresh(), principal_key="iss\x1frita", arguments_sha256=DIGEST) is None  # another key
    assert states.open("upstream-state", principal_key="iss\x1frita", arguments_sha256=DIGEST) is None
    assert states.open(f"{STATE_PREFIX}!!.??", principal_key="iss\x1frita", arguments_sha256=DIGEST) is None
    late = fresh()
    clock[0] = NOW + 60
    assert states.open(late, principal_key="iss\x1frita", arguments_sha256=DIGEST) is None  # expired


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = RequestStateSealer.load_or_create(tmp_path)
    key_file = tmp_path / "approval-state.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    state = first.seal("apr1", principal_key="p", arguments_sha256=DIGEST, expires_at=4_000_000_000)
    again = RequestStateSealer.load_or_create(tmp_path)  # after a restart
    assert again.open(state, principal_key="p", arguments_sha256=DIGEST) == "apr1"
