"""The local users file: argon2id hash and verify, constant-time unknown users, ConfigError on bad files."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters, profiles
from oauth_helpers import PASSWORD, password_hash

from bastion.errors import ConfigError
from bastion.oauth import users as users_module
from bastion.oauth.users import LocalUser, LocalUsers, SignInThrottle, add_user, hash_password
from bastion.stores.memory_counters import MemoryRateCounter


def write_users(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def entry(username: str = "alice", **fields: str) -> str:
    lines = [f"  - username: {username}", f"    password_hash: '{password_hash()}'"]
    lines += [f"    {key}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the hash every ``PasswordHasher.verify`` call checks against."""
    calls: list[str] = []
    original = PasswordHasher.verify

    def spy(self: PasswordHasher, stored: str | bytes, password: str | bytes) -> Any:
        calls.append(stored if isinstance(stored, str) else stored.decode())
        return original(self, stored, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return calls


def test_hash_then_verify_round_trip(tmp_path: Path) -> None:
    path = write_users(
        tmp_path, "users:\n" + entry(email="alice@example.com", name="Alice") + "    groups: [eng, ops]\n"
    )
    assert LocalUsers.load(path).verify("alice", PASSWORD) == LocalUser(
        sub="alice", username="alice", email="alice@example.com", name="Alice", groups=("eng", "ops")
    )


def test_hash_is_argon2id_with_the_rfc_9106_low_memory_parameters() -> None:
    assert password_hash().startswith("$argon2id$")
    assert extract_parameters(password_hash()).memory_cost == profiles.RFC_9106_LOW_MEMORY.memory_cost
    assert hash_password(PASSWORD) != password_hash()  # fresh salt each time


def test_empty_password_is_not_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_sub_defaults_to_username_and_can_be_set(tmp_path: Path) -> None:
    path = write_users(tmp_path, "users:\n" + entry() + entry("bob", sub="user-0042"))
    local = LocalUsers.load(path)
    assert local.usernames == ("alice", "bob")
    assert (user := local.verify("alice", PASSWORD)) is not None
    assert user.sub == "alice"
    assert (user := local.verify("bob", PASSWORD)) is not None
    assert user.sub == "user-0042"


def test_wrong_password_is_none(tmp_path: Path, verify_calls: list[str]) -> None:
    local = LocalUsers.load(write_users(tmp_path, "users:\n" + entry()))
    assert local.verify("alice", "wrong") is None
    assert verify_calls == [password_hash()]


def test_unknown_user_is_none_after_verifying_the_dummy_hash(tmp_path: Path, verify_calls: list[str]) -> None:
    local = LocalUsers.load(write_users(tmp_path, "users:\n" + entry()))
    assert local.verify("mallory", PASSWORD) is None
    assert verify_calls == [users_module._DUMMY_HASH]


def test_dummy_hash_costs_what_a_real_hash_costs() -> None:
    dummy = extract_parameters(users_module._DUMMY_HASH)
    real = extract_parameters(password_hash())
    assert (dummy.type, dummy.time_cost, dummy.memory_cost, dummy.parallelism, dummy.hash_len) == (
        real.type, real.time_cost, real.memory_cost, real.parallelism, real.hash_len
    )  # fmt: skip


@pytest.mark.parametrize("password", ["", "\ud800", "x" * 10_000, "\x00"])
def test_odd_passwords_are_refused_without_raising(password: str) -> None:
    local = LocalUsers([(LocalUser("alice", "alice", None, None, ()), password_hash())])
    assert local.verify("alice", password) is None


def test_a_hash_argon2_cannot_read_is_refused_without_raising() -> None:
    local = LocalUsers([(LocalUser("alice", "alice", None, None, ()), "$argon2id$v=19$broken")])
    assert local.verify("alice", PASSWORD) is None


def test_constructor_refuses_duplicate_usernames() -> None:
    user = LocalUser("alice", "alice", None, None, ())
    with pytest.raises(ValueError, match="duplicate username 'alice'"):
        LocalUsers([(user, password_hash()), (user, password_hash())])


def test_loading_warns_that_this_is_a_development_sign_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bastion.oauth.users"):
        LocalUsers.load(write_users(tmp_path, "users:\n" + entry()))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "development" in warnings[0].getMessage()
    assert "OpenID Connect" in warnings[0].getMessage()


WELL_FORMED = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g"  # parses; verifies nothing

BAD_FILES = {
    "plaintext in password_hash": (
        "users:\n  - username: alice\n    password_hash: hunter2\n",
        "users.yaml: users.0.password_hash: must be an argon2id hash",
    ),
    "plaintext password key": (
        "users:\n  - username: alice\n    password: hunter2\n",
        "users.yaml: users.0: a plaintext `password` is not accepted",
    ),
    "argon2i, not argon2id": (
        "users:\n  - username: alice\n    password_hash: '$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g'\n",
        "users.yaml: users.0.password_hash: must be an argon2id hash",
    ),
    "malformed argon2id": (
        "users:\n  - username: alice\n    password_hash: '$argon2id$hunter2'\n",
        "users.yaml: users.0.password_hash: must be an argon2id hash",
    ),
    "username with a space": (
        f"users:\n  - username: 'al ice'\n    password_hash: '{WELL_FORMED}'\n",
        "users.yaml: users.0.username: String should match pattern",
    ),
    "a sub in a provider's namespace": (
        f"users:\n  - username: dana\n    sub: 'corp:dana'\n    password_hash: '{WELL_FORMED}'\n",
        "users.yaml: users.0: a local subject may not contain ':'",
    ),
    "a username in a provider's namespace": (
        f"users:\n  - username: 'corp:dana'\n    password_hash: '{WELL_FORMED}'\n",
        "users.yaml: users.0: a local subject may not contain ':'",
    ),
    "extra key": (
        f"users:\n  - username: alice\n    password_hash: '{WELL_FORMED}'\n    role: admin\n",
        "users.yaml: users.0.role: Extra inputs are not permitted",
    ),
    "extra top-level key": ("users: []\nadmins: [alice]\n", "users.yaml: admins: Extra inputs are not permitted"),
    "not a mapping": ("- alice\n", "users.yaml: (top level): the users file must be a mapping"),
    "empty file": ("", "users.yaml: (top level): the users file must be a mapping"),
    "bad YAML": ("users: [\n", "users.yaml: invalid YAML at line 2"),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_is_a_config_error_naming_file_and_place(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        LocalUsers.load(write_users(tmp_path, text))
    assert expected in info.value.message
    assert "hunter2" not in info.value.message


def test_duplicate_usernames(tmp_path: Path) -> None:
    path = write_users(tmp_path, "users:\n" + entry() + entry(sub="other"))
    with pytest.raises(
        ConfigError, match=r"users\.yaml: users\.1\.username: duplicate username 'alice' \(also users\.0\)"
    ):
        LocalUsers.load(path)


def test_duplicate_subs(tmp_path: Path) -> None:
    path = write_users(tmp_path, "users:\n" + entry() + entry("bob", sub="alice"))
    with pytest.raises(ConfigError, match=r"users\.yaml: users\.1\.sub: duplicate sub 'alice'"):
        LocalUsers.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"users\.yaml: cannot read the users file"):
        LocalUsers.load(tmp_path / "users.yaml")


def test_add_user_creates_an_owner_only_file_then_replaces_and_keeps_others(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    assert add_user(path, username="alice", password_hash=password_hash(), groups=["eng"]) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert add_user(path, username="bob", password_hash=password_hash(), email="bob@example.com") is False
    assert add_user(path, username="alice", password_hash=password_hash(), name="Alice") is True
    local = LocalUsers.load(path)
    assert local.usernames == ("alice", "bob")
    assert local.verify("alice", PASSWORD) == LocalUser("alice", "alice", None, "Alice", ())
    assert local.verify("bob", PASSWORD) == LocalUser("bob", "bob", "bob@example.com", None, ())
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_add_user_leaves_a_broken_file_alone(tmp_path: Path) -> None:
    path = write_users(tmp_path, "users:\n  - username: alice\n    password: hunter2\n")
    with pytest.raises(ConfigError, match=r"users\.0: a plaintext"):
        add_user(path, username="bob", password_hash=password_hash())
    assert "hunter2" in path.read_text(encoding="utf-8")


def test_add_user_refuses_a_bad_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"users\.yaml: password_hash: must be an argon2id hash"):
        add_user(tmp_path / "users.yaml", username="alice", password_hash="hunter2")
    with pytest.raises(ConfigError, match=r"users\.yaml: username: String should match pattern"):
        add_user(tmp_path / "users.yaml", username="al ice", password_hash=password_hash())
    assert not (tmp_path / "users.yaml").exists()


def test_add_user_refuses_a_sub_taken_by_another_user(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, username="alice", password_hash=password_hash())
    with pytest.raises(ConfigError, match=r"users\.1\.sub: duplicate sub 'alice'"):
        add_user(path, username="bob", password_hash=password_hash(), sub="alice")
    assert LocalUsers.load(path).usernames == ("alice",)


async def test_the_throttle_blocks_after_five_failures_in_the_window_and_reopens_as_they_age() -> None:
    throttle = SignInThrottle(MemoryRateCounter(), max_attempts=5, window_s=300)
    for t in (0, 10, 20, 30):
        assert await throttle.attempt("alice", t) is None  # failed (never succeeded)
    assert await throttle.attempt("alice", 40) is None  # four failures: still allowed
    assert await throttle.attempt("alice", 41) == 259  # until the failure at t=0 is 300 s old
    assert await throttle.attempt("bob", 41) is None  # per username
    assert await throttle.attempt("alice", 300) is None  # t=0 has left the window


async def test_a_success_clears_the_name_and_the_names_tracked_are_bounded() -> None:
    throttle = SignInThrottle(MemoryRateCounter(max_keys=2), max_attempts=1, window_s=300)
    assert await throttle.attempt("alice", 0) is None
    await throttle.succeeded("alice")
    assert await throttle.attempt("alice", 1) is None
    for name in ("a", "b", "c"):
        assert await throttle.attempt(name, 1) is None
    assert await throttle.attempt("a", 2) is None  # forgotten: the stalest of four names, two kept
    assert await throttle.attempt("c", 2) is not None


async def test_guesses_sent_in_parallel_get_only_five_password_checks() -> None:
    """Each attempt is counted before its (slow) password check, so parallel guesses cannot all
    pass the throttle while the first ones are still being hashed."""
    throttle = SignInThrottle(MemoryRateCounter(), max_attempts=5, window_s=300)
    checked: list[int] = []

    async def guess(i: int) -> None:
        if await throttle.attempt("alice", 0) is None:
            await asyncio.sleep(0.01)  # argon2id off the event loop
            checked.append(i)

    await asyncio.gather(*(guess(i) for i in range(50)))
    assert len(checked) == 5
