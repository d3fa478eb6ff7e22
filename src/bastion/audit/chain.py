"""The hash chain over audit records, and its verification.

Every stored record carries ``seq`` (1, 2, 3 ... with no gaps), ``prev_hash`` (the
``hash`` of record ``seq - 1``; ``GENESIS_HASH``, 64 zeros, for ``seq`` 1) and
``hash = hex SHA-256 of canonical(record without "hash")`` (``canonical`` is RFC 8785
JCS). Changing any byte of a record, removing one, adding one or moving one breaks
the chain at that place, and ``verify_chain`` names the first place.

What the chain alone cannot detect: removing the NEWEST records (truncating the tail)
leaves a shorter chain that is still valid, and someone with write access can append
new well-formed records. Both need anchors kept elsewhere (signed checkpoints, to come).
Until then keep ``VerifyResult.last_seq`` and ``last_hash`` from a previous run and
compare them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bastion.audit.canonical import canonical

__all__ = ["GENESIS_HASH", "Problem", "VerifyResult", "record_hash", "seal", "verify_chain"]

GENESIS_HASH = "0" * 64
Problem = Literal["modified", "deleted", "inserted", "reordered", "truncated"]
_HASH_KEY = "hash".encode("utf-16-be")


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical form of ``record`` without its ``hash`` key."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def seal(body: Mapping[str, Any], *, seq: int, prev_hash: str) -> tuple[dict[str, Any], str]:
    """Chain ``body`` after ``prev_hash`` as record ``seq``.

    Returns the record (a new dict with ``seq``, ``prev_hash`` and ``hash`` added) and
    its canonical JSON text including ``hash``, as stored. The record is canonicalised
    once: members sorting before ``"hash"`` and after it are encoded apart, so that the
    text with and without ``hash`` are joined from the same two pieces.
    """
    record = {k: v for k, v in body.items() if k != "hash"}
    record["seq"], record["prev_hash"] = seq, prev_hash
    # Members are ordered by UTF-16 code units (RFC 8785); for ASCII names that is plain string order.
    before = {
        k: v
        for k, v in record.items()
        if (k < "hash" if k.isascii() else k.encode("utf-16-be", "surrogatepass") < _HASH_KEY)
    }
    after = {k: v for k, v in record.items() if k not in before}
    pieces = [canonical(before)[1:-1], canonical(after)[1:-1]]
    digest = hashlib.sha256(b"{" + b",".join(p for p in pieces if p) + b"}").hexdigest()
    pieces.insert(1, b'"hash":"' + digest.encode("ascii") + b'"')
    record["hash"] = digest
    return record, (b"{" + b",".join(p for p in pieces if p) + b"}").decode("utf-8")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of a chain verification.

    ``ok`` is true when every record checked out; ``checked`` counts the records read
    before the verdict. When not ok, ``first_bad_seq`` is the sequence number where the
    chain first breaks and ``problem`` says how: ``"modified"`` (a record's content
    no longer matches its hash, or a record was rewritten and re-hashed),
    ``"deleted"`` (sequence numbers missing), ``"inserted"`` (a record that does not
    belong: a repeated sequence number or an extra record that does not link),
    ``"reordered"`` (a record appears after records that follow it), ``"truncated"`` (the
    log ends before a signed checkpoint: ``audit.checkpoints.check_log``). ``last_seq`` and
    ``last_hash`` are those of the last good record; the chain alone cannot detect a cut-off
    tail, the checkpoints can.
    """

    ok: bool
    checked: int
    message: str
    first_bad_seq: int | None = None
    problem: Problem | None = None
    last_seq: int = 0
    last_hash: str = GENESIS_HASH


def verify_chain(records: Iterable[Mapping[str, Any]]) -> VerifyResult:
    """Check parsed records given in storage order (ascending ``seq``); stop at the first break."""
    it = iter(records)
    seq, prev, checked = 0, GENESIS_HASH, 0
    for record in it:
        checked += 1
        rseq = record.get("seq")
        if not isinstance(rseq, int) or record.get("hash") != _safe_hash(record):
            bad = rseq if isinstance(rseq, int) else seq + 1
            return _bad(checked, seq, prev, bad, "modified", f"record {bad} does not match its hash")
        if rseq == seq + 1 and record.get("prev_hash") == prev:
            seq, prev = rseq, str(record["hash"])
            continue
        problem, bad, why = _classify(record, seq + 1, prev, it)
        return _bad(checked, seq, prev, bad, problem, why)
    message = (
        f"OK: {checked} records, chain intact up to seq {seq} (hash {prev[:16]}); "
        "removal of the newest records cannot be detected without a checkpoint"
    )
    return VerifyResult(ok=True, checked=checked, message=message, last_seq=seq, last_hash=prev)


def _classify(
    record: Mapping[str, Any], expected: int, prev: str, rest: Iterator[Mapping[str, Any]]
) -> tuple[Problem, int, str]:
    """Name the break at ``record``, which should have been seq ``expected`` linking to ``prev``."""
    rseq: int = record["seq"]
    if rseq < expected:
        return "inserted", rseq, f"seq {rseq} appears twice"
    if rseq > expected:
        if any(r.get("seq") == expected for r in rest):
            return "reordered", expected, f"record {expected} is stored after record {rseq}"
        last = f"-{rseq - 1}" if rseq - 1 > expected else ""
        return "deleted", expected, f"record(s) {expected}{last} missing"
    following = next(rest, None)
    if following is None:
        return "inserted", rseq, f"record {rseq} does not link to record {expected - 1}"
    if following.get("seq") == rseq:
        return "inserted", rseq, f"seq {rseq} appears twice"
    if following.get("prev_hash") == record.get("hash") and expected > 1:
        return "modified", expected - 1, f"record {expected - 1} was changed and re-hashed"
    return "modified", rseq, f"record {rseq} was replaced (it does not link to record {expected - 1})"


def _safe_hash(record: Mapping[str, Any]) -> str | None:
    try:
        return record_hash(record)
    except TypeError:
        return None


def _bad(checked: int, seq: int, prev: str, bad: int, problem: Problem, why: str) -> VerifyResult:
    return VerifyResult(
        ok=False, checked=checked, message=f"FAILED at seq {bad}: {problem}: {why}",
        first_bad_seq=bad, problem=problem, last_seq=seq, last_hash=prev,
    )  # fmt: skip
