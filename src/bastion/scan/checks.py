"""The checks behind the content detectors: what turns a pattern's candidate into a finding.

``bastion.scan.content`` finds candidates with one RE2 pass; each rule then confirms its candidate
here, so that a number only counts as a payment card, an IBAN or a national id when its check
digits say so. Checksums and national formats come from ``python-stdnum`` (Luhn, ISO 13616 IBAN
with each country's BBAN format, US SSN issuance rules, Spanish DNI/NIE letters, the Italian
codice fiscale check character, the French NIR key, the Finnish HETU check character, the Swedish
personnummer Luhn digit) and phone numbers from Google's libphonenumber port (``phonenumbers``,
the metadata-only ``phonenumberslite`` distribution). Nothing here does I/O.

A check gets a ``Candidate`` and returns ``(rule, start, end)``: the rule to report (a keyed
assignment reports ``password`` or ``secret_assignment``) and the span to replace, relative to
``Candidate.value``; or ``None`` when the candidate is not one.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import NamedTuple

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.es import dni, nie
from stdnum.fi import hetu
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.se import personnummer
from stdnum.us import ssn

from bastion.audit.redact import is_secret_key

__all__ = [
    "CHECKS",
    "Candidate",
    "Check",
    "Hit",
    "keyed_secret",
]


class Candidate(NamedTuple):
    """What a pattern matched: ``value`` (the part a finding replaces), ``key`` (for a keyed
    assignment, the key; else ``""``), ``following`` (see below, or ``""``)
    and ``flagged`` (whether an optional marker group matched, e.g. the flag before tag characters).
    ``following`` is the two characters just after ``value`` (bytes that are not ASCII show as
    U+FFFD): a closing quote first for a quoted value."""

    value: str
    key: str = ""
    following: str = ""
    flagged: bool = False


Hit = tuple[str, int, int]
"""``(rule, start, end)``: the rule reported and the span replaced, within ``Candidate.value``."""
Check = Callable[[Candidate], Hit | None]

_PLACEHOLDER = re.compile(
    r"(?i)\**|x+|•+|-+|\.+|null|none|nil|true|false|undefined|redacted|hidden|"
    r"<[^>]*>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{.*\}\}|%[A-Za-z_]+%|\[REDACTED(?::[a-z0-9_]+)?\]"
)
_PASSWORD_KEY = re.compile(r"(?i)(?:pass(?:word|wd|phrase)?|pwd)[^a-z0-9]*$")
_CARD_SEPARATORS = re.compile(r"[ -]")


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def keyed_secret(key: str, value: str) -> str | None:
    """Whether ``value``, found under ``key``, is a secret: ``"password"`` when the key names a
    password (``password``, ``db_pass``, ``PWD``, ``passphrase``: any value but a placeholder),
    ``"secret_assignment"`` when it otherwise names a secret (``bastion.audit.redact.is_secret_key``:
    ``api_key``, ``client_secret``, ``session_token`` ...) and the value looks generated: no
    whitespace, at least 8 characters, at least 3 bits of entropy per character; else ``None``.
    Placeholders (``***``, ``<token>``, ``${VAR}``, ``null``, a redaction marker) are never secrets.
    """
    value = value.strip()
    if not value or not is_secret_key(key) or _PLACEHOLDER.fullmatch(value):
        return None
    if _PASSWORD_KEY.search(key):
        return "password"
    if len(value) < 8 or any(c.isspace() for c in value) or _entropy(value) < 3.0:
        return None
    return "secret_assignment"


def _keyed(candidate: Candidate) -> Hit | None:
    """A keyed assignment; an unquoted number (``"pin": 1234``, a JSON number) is left, as numbers
    are in structured content."""
    if candidate.value.isdigit() and candidate.following[:1] not in ('"', "'"):
        return None
    rule = keyed_secret(candidate.key, candidate.value)
    return (rule, 0, len(candidate.value)) if rule is not None else None


def _whole(rule: str, valid: Callable[[str], bool]) -> Check:
    def check(candidate: Candidate) -> Hit | None:
        return (rule, 0, len(candidate.value)) if valid(candidate.value) else None

    return check


def _groups(value: str) -> Iterator[tuple[int, int]]:
    """Spans of the separated groups of ``value`` (``"4111 1111"`` -> ``(0, 4), (5, 9)``)."""
    start = 0
    for match in _CARD_SEPARATORS.finditer(value):
        yield start, match.start()
        start = match.end()
    yield start, len(value)


def _card_number(digits: str) -> bool:
    """A payment card number: 13 to 19 digits, an issuer prefix with its length (ISO/IEC 7812: Visa
    4: 13, 16, 19; Mastercard 51-55 and 2221-2720: 16; American Express 34, 37: 15; Diners 30, 36,
    38; Discover, UnionPay and others 6), and a valid Luhn check digit."""
    n = len(digits)
    if not 13 <= n <= 19 or not luhn.is_valid(digits):
        return False
    if digits[0] == "4":
        return n in (13, 16, 19)
    if digits[:2] in ("34", "37"):
        return n == 15
    if "51" <= digits[:2] <= "55" or "2221" <= digits[:4] <= "2720":
        return n == 16
    return digits[0] in "36" and n >= 14


def _card(candidate: Candidate) -> Hit | None:
    """The candidate, or the run of its groups, that is a card number (the pattern may have taken
    digits before the card, e.g. an order number written just before it)."""
    value = candidate.value
    separators = set(_CARD_SEPARATORS.findall(value))
    if len(separators) > 1:
        return None
    if _card_number(value.replace(" ", "").replace("-", "")):
        return ("payment_card", 0, len(value))
    groups = list(_groups(value))
    for i in range(len(groups)):
        for j in range(len(groups), i, -1):
            start, end = groups[i][0], groups[j - 1][1]
            if (i, j) != (0, len(groups)) and _card_number(value[start:end].replace(" ", "").replace("-", "")):
                return ("payment_card", start, end)
    return None


def _iban(candidate: Candidate) -> Hit | None:
    """An IBAN (ISO 13616: the country's length and BBAN format, mod-97 check digits). The pattern
    may run on into the next words (``... 0130 00 BIC COBADEFF``), so shorter prefixes ending at a
    space are tried too."""
    value = candidate.value
    end = len(value)
    while end >= 15:
        if stdnum_iban.is_valid(value[:end]):
            return ("iban", 0, end)
        end = value.rfind(" ", 0, end)
    return None


def _phone(region: str | None) -> Check:
    def check(candidate: Candidate) -> Hit | None:
        try:
            number = phonenumbers.parse(candidate.value, region)
        except phonenumbers.NumberParseException:
            return None
        return ("phone", 0, len(candidate.value)) if phonenumbers.is_valid_number(number) else None

    return check


def _email(candidate: Candidate) -> Hit | None:
    """An email address, but not an scp-style remote (``git@github.com:org/repo``) nor a local part
    that starts or ends with a dot or has two in a row."""
    local = candidate.value.partition("@")[0]
    scp = candidate.following[:1] == ":" and candidate.following[1:].strip() != ""
    if scp or local.startswith(".") or local.endswith(".") or ".." in local:
        return None
    return ("email", 0, len(candidate.value))


def _hetu_or_personnummer(candidate: Candidate) -> Hit | None:
    """``131052-308T`` is a Finnish HETU; ``811228-9874`` has the HETU's shape too but is a Swedish
    personnummer (both patterns match it at one start, and the HETU rule is listed first)."""
    value = candidate.value
    if hetu.is_valid(value):
        return ("fi_hetu", 0, len(value))
    return ("se_personnummer", 0, len(value)) if personnummer.is_valid(value) else None


_TAG_LETTERS = frozenset(range(0xE0030, 0xE003A)) | frozenset(range(0xE0061, 0xE007B))


def _unicode_tags(candidate: Candidate) -> Hit | None:
    """Unicode tag characters (U+E0000-E007F), invisible to people and read by models, except in
    an emoji subdivision flag: U+1F3F4, a few tag letters or digits, U+E007F (Unicode TS #51)."""
    value = candidate.value
    tags = [ord(c) for c in value if 0xE0000 <= ord(c) <= 0xE007F]
    is_flag = candidate.flagged and 2 <= len(tags) <= 7 and tags[-1] == 0xE007F and set(tags[:-1]) <= _TAG_LETTERS
    return None if is_flag else ("unicode_tags", 0, len(value))


CHECKS: dict[str, Check] = {
    "password": _keyed,  # the keyed assignment rule reports password or secret_assignment
    "payment_card": _card,
    "iban": _iban,
    "phone": _phone(None),
    "phone_nanp": _phone("US"),
    "email": _email,
    "us_ssn": _whole("us_ssn", ssn.is_valid),
    "es_dni": _whole("es_dni", dni.is_valid),
    "es_nie": _whole("es_nie", nie.is_valid),
    "it_fiscal_code": _whole("it_fiscal_code", codicefiscale.is_valid),
    "fr_nir": _whole("fr_nir", nir.is_valid),
    "fi_hetu": _hetu_or_personnummer,
    "se_personnummer": _whole("se_personnummer", personnummer.is_valid),
    "unicode_tags": _unicode_tags,
}
"""The check of each rule that has one (by the rule id the pattern carries); a rule without one is
confirmed by its pattern alone (documented token formats)."""
