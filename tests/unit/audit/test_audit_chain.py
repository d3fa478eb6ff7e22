"""The hash chain in memory: sealing, and verification of each kind of tampering."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.canonical import canonical
from bastion.audit.chain import GENESIS_HASH, record_hash, seal, verify_chain


def _chain(n: int) -> list[dict[str, Any]]:
    records, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        record, _ = seal({"kind": "decision", "target": f"tool-{seq}", "n": seq / 3}, seq=seq, prev_hash=prev)
        records.append(record)
        prev = record["hash"]
    return records


@given(
    st.dictionaries(st.text(), st.integers() | st.text() | st.floats(allow_nan=False)), st.integers(1, 10**9)
)
def test_seal_text_is_the_canonical_record_and_hash_matches(body: dict[str, Any], seq: int) -> None:
    record, text = seal(body, seq=seq, prev_hash="a" * 64)
    assert text.encode() == canonical(record)
    assert record["hash"] == record_hash(record)
    assert record["seq"] == seq


def test_first_record_links_to_genesis() -> None:
    assert _chain(1)[0]["prev_hash"] == "0" * 64


def test_intact_chain_verifies() -> None:
    result = verify_chain(_chain(5))
    assert result.ok
    assert (result.checked, result.last_seq, result.first_bad_seq) == (5, 5, None)
    assert "cannot be detected" in result.message


def test_empty_chain_verifies() -> None:
    assert verify_chain([]).ok


def test_edited_record() -> None:
    records = _chain(5)
    records[2]["target"] = "rm -rf"
    result = verify_chain(records)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "modified", 3)
    assert result.last_seq == 2


def test_edited_and_rehashed_record() -> None:
    records = _chain(5)
    records[2]["target"] = "rm -rf"
    records[2]["hash"] = record_hash(records[2])
    result = verify_chain(records)
    assert (result.problem, result.first_bad_seq) == ("modified", 3)


@pytest.mark.parametrize(("index", "first_bad"), [(0, 1), (2, 3)])
def test_deleted_record(index: int, first_bad: int) -> None:
    records = _chain(5)
    del records[index]
    result = verify_chain(records)
    assert (result.problem, result.first_bad_seq) == ("deleted", first_bad)


def test_reordered_records() -> None:
    records = _chain(5)
    records[1], records[3] = records[3], records[1]
    result = verify_chain(records)
    assert (result.problem, result.first_bad_seq) == ("reordered", 2)


def test_forged_record_appended_with_wrong_prev() -> None:
    records = _chain(3)
    forged, _ = seal({"kind": "decision", "target": "x"}, seq=4, prev_hash="f" * 64)
    result = verify_chain([*records, forged])
    assert (result.problem, result.first_bad_seq, result.last_seq) == ("inserted", 4, 3)


@pytest.mark.parametrize("prev", ["good", "f" * 64])
def test_forged_record_inserted_in_the_middle(prev: str) -> None:
    records = _chain(5)
    forged, _ = seal({"kind": "decision"}, seq=3, prev_hash=records[1]["hash"] if prev == "good" else prev)
    result = verify_chain([*records[:2], forged, *records[2:]])
    assert (result.problem, result.first_bad_seq) == ("inserted", 3)


@pytest.mark.parametrize("broken", [{"seq": "3"}, {"hash": None}, {"seq": 3, "hash": "x", "v": b"bytes"}])
def test_malformed_record_is_modified(broken: dict[str, Any]) -> None:
    records = _chain(5)
    records[2] = {**records[2], **broken}
    result = verify_chain(records)
    assert (result.problem, result.first_bad_seq) == ("modified", 3)
