"""Personal-data detectors of ``bastion.scan.content`` (issue 15): a number only counts as a payment
card, an IBAN or a national id when its check digits say so, a phone number when libphonenumber
says it is valid; dates, amounts, ids and near misses with one wrong digit are left alone."""

from __future__ import annotations

import pytest

from bastion.scan.content import CHECK_BUDGET, detect

PII = frozenset({"pii"})


def _found(text: str) -> list[tuple[str, str]]:
    return [(d.rule, text[d.start : d.end]) for d in detect(text, PII)]


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("payment_card", "4111 1111 1111 1111"),  # Visa test number, spaced
        ("payment_card", "4111-1111-1111-1111"),
        ("payment_card", "4012888888881881"),
        ("payment_card", "378282246310005"),  # American Express, 15 digits
        ("payment_card", "5555 5555 5555 4444"),  # Mastercard
        ("payment_card", "2223 0031 2200 3222"),  # Mastercard 2-series
        ("payment_card", "6011 1111 1111 1117"),  # Discover
        ("iban", "DE89 3704 0044 0532 0130 00"),
        ("iban", "GB82WEST12345698765432"),
        ("iban", "FR14 2004 1010 0505 0001 3M02 606"),
        ("us_ssn", "536-90-4399"),
        ("es_dni", "12345678Z"),
        ("es_nie", "X1234567L"),
        ("it_fiscal_code", "RSSMRA85T10A562S"),
        ("fr_nir", "2 95 10 99 126 111 93"),
        ("fi_hetu", "131052-308T"),
        ("se_personnummer", "811228-9874"),
        ("se_personnummer", "19811228-9874"),
        ("phone", "+44 20 7946 0958"),
        ("phone", "+1 (415) 555-2671"),
        ("phone", "+33 6 12 34 56 78"),
        ("phone", "(415) 555-2671"),
        ("phone", "415-555-2671"),
        ("email", "bob.smith+crm@example.co.uk"),
    ],
)
def test_valid_personal_data_is_found(rule: str, value: str) -> None:
    assert _found(f"customer record: {value}; next") == [(rule, value)]


@pytest.mark.parametrize(
    "value",
    [
        "4111 1111 1111 1112",  # Luhn check digit wrong
        "4111 1111-1111 1111",  # mixed separators
        "1736500000000",  # epoch milliseconds (13 digits, no card issuer starts with 1)
        "3782822463100051",  # an Amex prefix with 16 digits
        "9111111111111111",  # no issuer prefix 9
        "DE89 3704 0044 0532 0130 01",  # IBAN check digits wrong
        "GB82 WEST 1234 5698 7654 33",
        "XX89 3704 0044 0532 0130 00",  # no such country
        "000-12-3456",  # SSN area 000
        "666-12-3456",  # SSN area 666
        "912-34-5678",  # SSN area 9xx
        "536-00-4399",  # SSN group 00
        "078-05-1120",  # the Woolworth wallet SSN, never valid
        "12345678A",  # DNI letter wrong
        "X1234567A",  # NIE letter wrong
        "RSSMRA85T10A562T",  # codice fiscale check letter wrong
        "2 95 10 99 126 111 94",  # NIR key wrong
        "131052-308U",  # HETU check character wrong
        "811228-9875",  # personnummer Luhn digit wrong
        "+1 123 456 7890",  # no area code 123
        "+44 12",  # too short
        "2025-01-10T10:20:00Z",  # a timestamp
        "order 100037, amount 48.29",  # ids and amounts
        "6513270e-269e-0d37-f2a7-4de452e6b438",  # a UUID
        "10.0.0.1 and 192.168.100.200",  # addresses
        "git@github.com:org/repo.git",  # an scp-style remote, not an email
        "a..b@example.com",  # not a valid local part
    ],
)
def test_near_misses_are_not_personal_data(value: str) -> None:
    assert _found(f"value {value} end") == []


def test_a_card_after_an_order_number_is_still_found() -> None:
    assert _found("order 2025 4111 1111 1111 1111 paid") == [("payment_card", "4111 1111 1111 1111")]


def test_an_iban_followed_by_words_is_cut_at_its_end() -> None:
    assert _found("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX") == [("iban", "DE89 3704 0044 0532 0130 00")]


def test_offsets_count_characters_in_text_that_is_not_ascii() -> None:
    text = "Zoë Müller — zoë.mueller@example.de — +49 30 901820 — café"
    assert _found(text) == [("email", "zoë.mueller@example.de"), ("phone", "+49 30 901820")]


def test_past_the_check_budget_candidates_are_taken_unchecked() -> None:
    near_misses = "4111 1111 1111 1112; " * CHECK_BUDGET  # each turned down by its Luhn digit
    text = near_misses + "4111 1111 1111 1113 and 4111 1111 1111 1111"
    found = _found(text)
    assert found == [("payment_card", "4111 1111 1111 1113"), ("payment_card", "4111 1111 1111 1111")]
    assert detect(near_misses[: -len("; ")], PII) == []  # within the budget, every one is checked
