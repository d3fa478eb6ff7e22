"""SigningKeys: the key file, thumbprint kids, rotation, the verification window, the public JWKS."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from identity_support import WINDOW_S
from joserfc.jwk import ECKey

from bastion.errors import ConfigError
from bastion.identity import SigningKeys

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def test_first_start_creates_directory_and_private_file(data_dir: Path) -> None:
    assert not data_dir.exists()
    keys = SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)
    path = data_dir / "signing-keys.json"
    assert keys.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]
    record = json.loads(path.read_text())["keys"][0]
    assert record["retired_at"] is None
    assert record["jwk"]["crv"] == "P-256"
    assert "d" in record["jwk"]


def test_kid_is_rfc7638_thumbprint_and_stable_across_loads(keys: SigningKeys, data_dir: Path) -> None:
    public = ECKey.import_key(keys.jwks()["keys"][0])
    assert keys.current.kid == public.thumbprint()
    again = SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)
    assert again.current.kid == keys.current.kid


def test_jwks_has_no_private_members(keys: SigningKeys) -> None:
    keys.rotate()
    document = keys.jwks()
    assert len(document["keys"]) == 2
    for jwk in document["keys"]:
        assert not _PRIVATE_MEMBERS & jwk.keys()
        assert jwk["kty"] == "EC"
        assert jwk["use"] == "sig"
        assert jwk["alg"] == "ES256"
        assert not ECKey.import_key(jwk).is_private


def test_rotate_retires_old_key_until_window_ends(keys: SigningKeys) -> None:
    old = keys.current
    new = keys.rotate(now=1000)
    assert keys.current == new
    assert new.kid != old.kid
    assert [k["kid"] for k in keys.jwks(now=1000)["keys"]] == [new.kid, old.kid]
    assert keys.verification_key(old.kid, now=1000 + WINDOW_S - 1) is not None
    assert keys.verification_key(old.kid, now=1000 + WINDOW_S) is None
    assert [k["kid"] for k in keys.jwks(now=1000 + WINDOW_S)["keys"]] == [new.kid]


def test_prune_drops_retired_keys_after_window(keys: SigningKeys, data_dir: Path) -> None:
    old = keys.current
    keys.rotate(now=1000)
    assert keys.prune(now=1000 + WINDOW_S - 1) == 0
    assert keys.prune(now=1000 + WINDOW_S) == 1
    saved = json.loads((data_dir / "signing-keys.json").read_text())["keys"]
    assert old.kid not in [record["kid"] for record in saved]


def test_rotation_by_another_process_is_seen_after_refresh(keys: SigningKeys, data_dir: Path) -> None:
    other = SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)
    new = other.rotate()
    assert keys.verification_key(new.kid) is None
    assert keys.refresh() is True
    assert keys.verification_key(new.kid) is not None
    assert keys.refresh() is False


def test_rotate_does_not_lose_a_concurrent_rotation(keys: SigningKeys, data_dir: Path) -> None:
    other = SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)
    first = other.rotate()
    second = keys.rotate()
    assert {k["kid"] for k in keys.jwks()["keys"]} >= {first.kid, second.kid}


def test_unknown_kid_has_no_key(keys: SigningKeys) -> None:
    assert keys.verification_key("no-such-kid") is None


def test_refuses_group_readable_file(keys: SigningKeys, data_dir: Path) -> None:
    os.chmod(data_dir / "signing-keys.json", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda doc: "not json",
        lambda doc: {**doc, "version": 2},
        lambda doc: {**doc, "keys": [{**doc["keys"][0], "kid": "forged"}]},
        lambda doc: {**doc, "keys": [{**doc["keys"][0], "retired_at": 5}]},
        lambda doc: {**doc, "keys": [{**doc["keys"][0], "jwk": {"kty": "oct", "k": "AAAA"}}]},
    ],
    ids=["garbage", "version", "kid-mismatch", "no-current-key", "wrong-key-type"],
)
def test_refuses_corrupt_file(keys: SigningKeys, data_dir: Path, mangle: object) -> None:
    path = data_dir / "signing-keys.json"
    document = json.loads(path.read_text())
    mangled = mangle(document)  # type: ignore[operator]
    path.write_text(mangled if isinstance(mangled, str) else json.dumps(mangled))
    with pytest.raises(ConfigError, match=str(path)):
        SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)


@pytest.mark.parametrize("window", [0, -1, True])
def test_refuses_bad_window(data_dir: Path, window: int) -> None:
    with pytest.raises(ConfigError, match="verify_window_s"):
        SigningKeys.load_or_create(data_dir, verify_window_s=window)


# identity.signing_keys_file: one key file for every replica, managed outside the data directory


def test_a_managed_key_file_that_is_missing_is_not_created_and_says_how(tmp_path: Path) -> None:
    shared = tmp_path / "secret" / "signing-keys.json"
    with pytest.raises(ConfigError, match=r"no signing key file .*rotate-keys"):
        SigningKeys.load_or_create(tmp_path / "data", verify_window_s=WINDOW_S, file=shared)
    assert not shared.exists()
    assert not (tmp_path / "data").exists()  # the data directory keeps no keys of its own then


def test_replicas_read_one_managed_file_without_touching_its_folder_and_follow_its_rotation(tmp_path: Path) -> None:
    folder = tmp_path / "secret"  # as a read-only mount: the replicas write nothing there, not even a lock
    folder.mkdir()
    shared = folder / "signing-keys.json"
    operator = SigningKeys.load_or_create(tmp_path / "ops", verify_window_s=WINDOW_S, file=shared, create=True)
    listing = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    first = SigningKeys.load_or_create(tmp_path / "a", verify_window_s=WINDOW_S, file=shared)
    second = SigningKeys.load_or_create(tmp_path / "b", verify_window_s=WINDOW_S, file=shared)
    assert first.current.kid == second.current.kid == operator.current.kid
    assert first.jwks() == second.jwks()
    assert not first.refresh()
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == listing
    old = operator.current.kid
    new = operator.rotate()  # the operator rotates the copy and rolls it out
    assert first.refresh()
    assert first.current.kid == new.kid != old
    assert first.verification_key(old) is not None  # tokens signed before the rotation still verify
