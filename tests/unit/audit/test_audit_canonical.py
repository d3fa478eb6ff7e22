"""Canonical JSON: equal to RFC 8785 (checked against the ``rfc8785`` package) plus documented extensions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.canonical import NotCanonicalizable, arguments_sha256, canonical

_SAFE_INT = 2**53 - 1
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-_SAFE_INT, _SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_equals_rfc8785_for_every_value_jcs_accepts(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@given(json_values)
def test_stored_text_reads_back_to_the_same_bytes(value: Any) -> None:
    assert canonical(json.loads(canonical(value))) == canonical(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}'),
        (1.0, b"1"),
        (-0.0, b"0"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (0.000001, b"0.000001"),
        (123.456, b"123.456"),
        ({"\ue000": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ue000":1}'.encode()),  # UTF-16 order
        ("line\nbreak\u2028é", '"line\\nbreak\u2028é"'.encode()),
        ((1, 2), b"[1,2]"),
    ],
)
def test_known_outputs(value: Any, expected: bytes) -> None:
    assert canonical(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**64, b"18446744073709551616"),
        (-(2**60), b"-1152921504606846976"),
        (float("nan"), b"NaN"),
        (float("-inf"), b"-Infinity"),
        ("\udc80", b'"\\udc80"'),
    ],
)
def test_extensions_beyond_jcs_are_exact_and_read_back(value: Any, expected: bytes) -> None:
    out = canonical(value)
    assert out == expected
    assert canonical(json.loads(out)) == out


def test_big_integers_stay_distinct() -> None:
    assert arguments_sha256({"id": 2**53 + 1}) != arguments_sha256({"id": 2**53})


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, {1: "int key"}, object(), [{"ok": {"x": b""}}]])
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical(value)


def test_arguments_sha256_ignores_key_order_and_whitespace() -> None:
    a = json.loads('{"path": "/tmp/x", "options": {"recursive": true, "depth": 2}}')
    b = json.loads('{ "options" : {"depth":2,"recursive":true},\n "path":"/tmp/x" }')
    assert arguments_sha256(a) == arguments_sha256(b)
    assert arguments_sha256(a) == hashlib.sha256(rfc8785.dumps(a)).hexdigest()
    assert arguments_sha256(a) != arguments_sha256({**a, "path": "/tmp/y"})


def test_no_arguments_is_not_the_same_as_empty_object() -> None:
    assert arguments_sha256({}) == hashlib.sha256(b"{}").hexdigest()
    assert arguments_sha256(None) != arguments_sha256({})


@pytest.mark.parametrize(
    "number",
    [1e-4, 9.999e-5, 0.1, 1.5, 123.456, 0.001, 2.5e-4, 1e15 + 0.5, 9.999999999999998e15, 1e16, 1.0, 0.0, -3.25, 1e-7],
)
def test_floats_on_the_fast_path_match_rfc8785(number: float) -> None:
    assert canonical({"duration_ms": number, "n": [number]}) == rfc8785.dumps({"duration_ms": number, "n": [number]})


_PLAIN_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_PLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _PLAIN_TEXT
    | st.floats(min_value=1e-4, max_value=1e15, allow_nan=False).filter(lambda f: not f.is_integer()),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=6), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(_PLAIN_VALUES)
def test_the_fast_path_writes_exactly_what_the_c_encoder_writes(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
        "utf-8", "backslashreplace"
    )
    assert canonical(value) == expected


@pytest.mark.parametrize("value", [{"big": 2**70}, {"lone": "\ud800"}, {"ctl": "\x00\x1f\x7f\u2028"}])
def test_values_orjson_refuses_or_escapes_differently_still_match(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
        "utf-8", "backslashreplace"
    )
    assert canonical(value) == expected
