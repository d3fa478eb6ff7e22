"""Signed checkpoints of the audit chain (``bastion.audit.checkpoints``): signing and verifying, key
rotation, forged and altered lines refused, and a real log held against them: the newest records cut
off ("truncated") and a record replaced under a checkpoint are found; an intact log passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audit_helpers import raw
from joserfc import jws
from joserfc.jwk import OctKey, OKPKey
from tests.support.audit_events import decision

from bastion.audit.checkpoints import (
    CHECKPOINT_ALGORITHM,
    KEYS_FILE,
    CheckpointKeys,
    CheckpointWriter,
    check_log,
    public_keys_from_jwks,
    read_checkpoints,
    verify_checkpoint,
)
from bastion.audit.query import SQLiteAuditReader
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.errors import CheckpointInvalid, ConfigError

HEAD = "ab" * 32


def test_a_checkpoint_verifies_with_its_key_only(tmp_path: Path) -> None:
    keys = CheckpointKeys.load_or_create(tmp_path)
    checkpoint = keys.sign(7, HEAD, 1_700_000_000.5)
    assert (checkpoint.seq, checkpoint.hash, checkpoint.time) == (7, HEAD, "2023-11-14T22:13:20.500000Z")
    assert verify_checkpoint(checkpoint.line(), keys.public_keys()) == checkpoint
    other = CheckpointKeys.load_or_create(tmp_path / "elsewhere")
    with pytest.raises(CheckpointInvalid, match="unknown key"):
        verify_checkpoint(checkpoint.line(), other.public_keys())
    assert (tmp_path / KEYS_FILE).stat().st_mode & 0o777 == 0o600


def test_the_clear_copy_does_not_count_and_altered_signatures_fail(tmp_path: Path) -> None:
    keys = CheckpointKeys.load_or_create(tmp_path)
    line = json.loads(keys.sign(7, HEAD, 1_700_000_000).line())
    lied = json.dumps({**line, "seq": 9000})  # the clear copy says more than was signed
    assert verify_checkpoint(lied, keys.public_keys()).seq == 7
    header, payload, signature = line["jws"].split(".")
    forged_payload = jws.serialize_compact({"alg": CHECKPOINT_ALGORITHM, "kid": line["kid"]}, b'{"seq":9000}',
                                           OKPKey.generate_key("Ed25519", private=True),
                                           algorithms=[CHECKPOINT_ALGORITHM]).split(".")[1]  # fmt: skip
    for token in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{signature[:-4]}AAAA", "x.y", ""):
        with pytest.raises(CheckpointInvalid):
            verify_checkpoint(json.dumps({**line, "jws": token}), keys.public_keys())
    with pytest.raises(CheckpointInvalid, match="not a checkpoint"):
        verify_checkpoint("not json", keys.public_keys())


def test_a_checkpoint_signed_with_another_algorithm_is_refused(tmp_path: Path) -> None:
    keys = CheckpointKeys.load_or_create(tmp_path)
    kid = keys.current.thumbprint()
    token = jws.serialize_compact({"alg": "HS256", "kid": kid}, b'{"seq":1,"hash":"x","time":"t"}',
                                  OctKey.import_key("k" * 32), algorithms=["HS256"])  # fmt: skip
    with pytest.raises(CheckpointInvalid, match="unknown key"):
        verify_checkpoint(json.dumps({"jws": token}), keys.public_keys())


def test_rotation_keeps_old_checkpoints_verifying_and_the_jwks_carries_every_key(tmp_path: Path) -> None:
    keys = CheckpointKeys.load_or_create(tmp_path)
    old = keys.sign(1, HEAD, 1_700_000_000)
    gateway = CheckpointKeys.load_or_create(tmp_path)  # the gateway's copy, rotated by the CLI's
    new_kid = keys.rotate()
    gateway.refresh()
    new = gateway.sign(2, HEAD, 1_700_000_001)
    assert new.kid == new_kid != old.kid
    published = public_keys_from_jwks(json.loads(json.dumps(keys.jwks())))
    assert {verify_checkpoint(c.line(), published).kid for c in (old, new)} == {old.kid, new_kid}
    assert all("d" not in entry for entry in keys.jwks()["keys"])  # public halves only


def test_a_jwks_entry_whose_kid_does_not_name_its_key_is_refused(tmp_path: Path) -> None:
    document = CheckpointKeys.load_or_create(tmp_path).jwks()
    document["keys"][0]["kid"] = "someone-else"
    with pytest.raises(CheckpointInvalid, match="kid"):
        public_keys_from_jwks(document)


def test_a_key_file_readable_by_others_or_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint keys"):
        CheckpointKeys.load_or_create(tmp_path, create=False)
    CheckpointKeys.load_or_create(tmp_path)
    os.chmod(tmp_path / KEYS_FILE, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        CheckpointKeys.load_or_create(tmp_path)


async def test_the_writer_writes_when_due_and_a_log_is_held_against_its_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "data" / "bastion.db"
    keys = CheckpointKeys.load_or_create(tmp_path)
    file = tmp_path / "checkpoints.jsonl"
    writer = CheckpointWriter(keys, file, every_records=3, every_s=3600)
    async with SQLiteAuditLog(db) as log:
        written = []
        for n in range(7):
            await log.append(decision(n))
            written.append(await writer.maybe_write(*await log.head()))
        assert [c.seq if c else None for c in written] == [None, None, 3, None, None, 6, None]
        assert await writer.maybe_write(*await log.head(), force=True) is not None  # seq 7, at shutdown
        assert await writer.maybe_write(*await log.head(), force=True) is None  # nothing new
    reader = SQLiteAuditReader(db)
    checkpoints = read_checkpoints(file, keys.public_keys())
    assert [c.seq for c in checkpoints] == [3, 6, 7]
    intact = check_log(reader.verify(), checkpoints, reader.hash_at)
    assert intact.ok
    assert "covers seq 7" in intact.message
    with raw(db) as conn:  # the newest two records cut off: a valid, shorter chain
        conn.execute("DELETE FROM audit_events WHERE seq > 5")
    assert reader.verify().ok  # the chain alone cannot tell
    cut = check_log(reader.verify(), checkpoints, reader.hash_at)
    assert (cut.ok, cut.problem, cut.first_bad_seq) == (False, "truncated", 6)
    assert "the log ends at seq 5" in cut.message


async def test_a_rewritten_log_does_not_match_its_checkpoint(tmp_path: Path) -> None:
    """The whole log replaced by another valid chain of the same length: the chain verifies, the
    checkpoint's hash does not match."""
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    keys = CheckpointKeys.load_or_create(tmp_path)
    for path in (first, second):
        async with SQLiteAuditLog(path) as log:
            for n in range(3):
                await log.append(decision(n))
            if path == first:
                checkpoint = keys.sign(*await log.head(), 1_700_000_000)
    reader = SQLiteAuditReader(second)
    result = check_log(reader.verify(), [checkpoint], reader.hash_at)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "modified", 3)


def test_read_checkpoints_names_the_line_that_fails(tmp_path: Path) -> None:
    keys = CheckpointKeys.load_or_create(tmp_path)
    file = tmp_path / "checkpoints.jsonl"
    file.write_text(keys.sign(1, HEAD, 0).line() + "\n\n" + '{"jws": "x.y.z"}\n', encoding="utf-8")
    with pytest.raises(CheckpointInvalid, match=r"checkpoints\.jsonl:3"):
        read_checkpoints(file, keys.public_keys())
    assert read_checkpoints(tmp_path / "none.jsonl", keys.public_keys()) == []


def test_the_signed_payload_is_seq_hash_and_time(tmp_path: Path) -> None:
    keys = CheckpointKeys.load_or_create(tmp_path)
    checkpoint = keys.sign(5, HEAD, 1_700_000_000)
    payload = json.loads(jws.extract_compact(checkpoint.jws.encode()).payload)
    assert payload == {"seq": 5, "hash": HEAD, "time": "2023-11-14T22:13:20.000000Z"}


def test_processes_starting_together_create_one_key(tmp_path: Path) -> None:
    """Workers of ``bastion serve --workers N`` start at once: they must agree on one key, or the
    checkpoints of all but one would name a key the file no longer has. Each process imports first,
    then waits for one signal file, so that they all reach the key file within a millisecond."""
    go = tmp_path / "go"
    script = (
        "import sys, time; from pathlib import Path; from bastion.audit.checkpoints import CheckpointKeys\n"
        "Path(sys.argv[2]).touch()\n"
        f"while not Path({str(go)!r}).exists(): time.sleep(0.0005)\n"
        "print(CheckpointKeys.load_or_create(Path(sys.argv[1])).current.thumbprint())"
    )
    data_dir = tmp_path / "data"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(data_dir), str(tmp_path / f"ready-{n}")],
                              stdout=subprocess.PIPE, text=True) for n in range(8)]  # fmt: skip
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in range(8)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    kids = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(kids) == 1, kids
    assert kids == set(CheckpointKeys.load_or_create(data_dir).public_keys())
