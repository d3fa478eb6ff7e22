"""``bastion users hash | add`` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher
from oauth_helpers import PASSWORD, password_hash
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.oauth.users import LocalUser, LocalUsers, add_user

runner = CliRunner()


def test_hash_from_stdin_prints_an_argon2id_hash_of_the_first_line() -> None:
    result = runner.invoke(app, ["users", "hash", "--password-stdin"], input=f"{PASSWORD}\nignored\n")
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip()
    assert printed.startswith("$argon2id$")
    assert PasswordHasher().verify(printed, PASSWORD)


def test_hash_prompts_twice_with_hidden_input() -> None:
    result = runner.invoke(app, ["users", "hash"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert PasswordHasher().verify(result.stdout.strip().splitlines()[-1], PASSWORD)


def test_hash_refuses_an_empty_password() -> None:
    result = runner.invoke(app, ["users", "hash", "--password-stdin"], input="\n")
    assert result.exit_code == 2
    assert "error: the password is empty" in result.stderr


def test_add_twice_replaces_the_user_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, username="bob", password_hash=password_hash())
    first = runner.invoke(
        app,
        ["users", "add", "--file", str(path), "--username", "alice", "--group", "eng", "--group", "ops",
         "--password-stdin"],
        input="first password\n",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    assert f"added alice in {path}" in first.stdout
    second = runner.invoke(
        app,
        ["users", "add", "-f", str(path), "--username", "alice", "--email", "alice@example.com", "--name", "Alice",
         "--password-stdin"],
        input="second password\n",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    assert f"replaced alice in {path}" in second.stdout
    local = LocalUsers.load(path)
    assert local.usernames == ("bob", "alice")
    assert local.verify("alice", "first password") is None
    assert local.verify("alice", "second password") == LocalUser("alice", "alice", "alice@example.com", "Alice", ())
    assert local.verify("bob", PASSWORD) is not None


def test_add_with_a_bad_username_fails_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    result = runner.invoke(
        app, ["users", "add", "--file", str(path), "--username", "al ice", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "username" in result.stderr
    assert not path.exists()


def test_add_to_a_broken_file_fails_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users: [\n", encoding="utf-8")
    result = runner.invoke(app, ["users", "add", "--file", str(path), "--username", "alice", "--password-stdin"],
                           input="pw\n")  # fmt: skip
    assert result.exit_code == 2
    assert "invalid YAML" in result.stderr
    assert path.read_text(encoding="utf-8") == "users: [\n"


def test_add_into_a_missing_directory_fails(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "users.yaml"
    result = runner.invoke(app, ["users", "add", "--file", str(path), "--username", "alice", "--password-stdin"],
                           input="pw\n")  # fmt: skip
    assert result.exit_code == 2
    assert "cannot write the users file" in result.stderr


def test_add_without_username_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["users", "add", "--file", str(tmp_path / "u.yaml")])
    assert result.exit_code == 2
    assert "--username" in result.output
