"""Content detectors: secrets, personal data and instructions aimed at the model, in result text.

Issue 15, "Result inspection and redaction". ``detect(text, kinds)`` returns each ``Detection``
(rule, kind, span) in ``text``; ``findings`` gives the same as ``bastion.scan.findings.Finding``
values (never the detected value). ``bastion.scan.redaction`` applies them to MCP results.

One pass: every rule's pattern is one alternative of ONE RE2 regular expression (``google-re2``,
linear time, a lazily built DFA shared by every call), compiled once per set of kinds. A text with
nothing to report costs one UTF-8 encode and one DFA scan (about 2 ns a byte); only candidates then
run their check (``bastion.scan.checks``: checksums, phone metadata, keyed values). Python's ``re``
tries each alternative at each position and costs about 200 times as much on such a pattern.

Rules (``RULES``), by kind:

- ``secret``: documented token formats: AWS access key ids (``AKIA``/``ASIA``...), Google API keys
  (``AIza``), OAuth tokens (``ya29.``) and client secrets (``GOCSPX-``), Azure storage account keys
  (``AccountKey=``) and Entra client secrets (``...8Q~...``), GitHub (``ghp_`` ``gho_`` ``ghu_``
  ``ghs_`` ``ghr_`` ``github_pat_``), GitLab (``glpat-`` and the other ``gl*-`` prefixes), Slack
  tokens (``xox?-``) and webhooks, Stripe keys (``sk_live_`` ``rk_test_`` ...) and webhook secrets
  (``whsec_``), Anthropic (``sk-ant-``), OpenAI (``sk-proj-``, ``sk-svcacct-``, ``sk-admin-``, keys
  carrying ``T3BlbkFJ``, legacy ``sk-`` + 48), Hugging Face (``hf_``), npm (``npm_``), PyPI
  (``pypi-``), SendGrid (``SG.``); PEM private key blocks (a GCP service-account key's
  ``private_key`` too); JWTs; ``Bearer`` credentials; passwords in URLs (``scheme://user:PASSWORD@``,
  so connection strings such as ``postgres://`` and ``mongodb+srv://``) and secret URL parameters
  (``sig=``, ``X-Amz-Signature=``, ``access_token=`` ...); and keyed assignments (``password=...``,
  ``"api_key": "..."``, ``DB_PASSWORD: ...``, ``Password=...;`` in ADO/ODBC connection strings):
  a key naming a password redacts any value, a key naming another secret redacts a value that
  looks generated (``checks.keyed_secret``; a value that is a bare number is left, as numbers are
  in structured content). Only the credential is replaced where a rule has a ``value`` part
  (``Bearer [REDACTED:bearer_token]``, ``postgres://app:[REDACTED:url_password]@db``).
- ``pii``: email addresses, phone numbers (international ``+CC`` numbers, and North American
  ``(415) 555-2671`` forms, valid per libphonenumber), payment cards (issuer prefix, length, Luhn),
  IBANs (country format and mod-97), US SSNs (``123-45-6789`` form with the issuance rules),
  Spanish DNI/NIE, Italian codice fiscale, French NIR, Finnish HETU and Swedish personnummer (each
  with its check character). Numbers with no separator or check (Dutch BSN, PESEL, bare 9-digit
  SSNs) and national phone numbers outside North America are not recognised: their false
  positives on ordinary ids and amounts would outnumber them.
- ``injection``: text aimed at the model rather than the user: "ignore (all) previous
  instructions" and its variants, "new instructions:", "do not tell the user", pseudo-tags such as
  ``<IMPORTANT>`` / ``<system>``, and Unicode tag characters (U+E0000-E007F, invisible to people,
  read by models; an emoji subdivision flag is allowed).

Not detected on purpose: bare high-entropy strings with no key (file ids, hashes, nonces in
results would be redacted with the secrets; ``bastion.audit.redact`` does redact them in recorded
arguments, where over-redaction costs nothing), and 9-digit or 10-digit numbers without a format.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import re2  # google-re2
from re2 import _re2

from bastion.scan.checks import CHECKS, Candidate
from bastion.scan.findings import Finding, Severity

__all__ = ["ALL_KINDS", "CHECK_BUDGET", "RULES", "Detection", "Kind", "Rule", "detect", "findings", "marker", "rule"]

Kind = Literal["secret", "pii", "injection"]
ALL_KINDS: frozenset[Kind] = frozenset(("secret", "pii", "injection"))
_SEVERITY: dict[Kind, Severity] = {"secret": "high", "pii": "medium", "injection": "high"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector: its stable ``id`` (the ``[REDACTED:<id>]`` marker and the record's key), its
    ``kind``, what it finds (``title``) and its RE2 ``pattern``. The pattern may name the groups
    ``value`` (and ``value_q``, ``value_u``: alternatives of it; the span replaced, else the whole
    match), ``key`` (a keyed assignment's key) and ``flag`` (an optional marker the check reads).
    No pattern crosses a NUL character: texts are scanned joined by NULs."""

    id: str
    kind: Kind
    title: str
    pattern: str


_NO = "\\s\\x00\"'<>"  # characters no value-like run crosses (whitespace, NUL, quotes, angle brackets)
_RUN = "[0-9A-Za-z_-]"  # a token character
RULES: tuple[Rule, ...] = (
    # injection first: at one position the first alternative wins, and these are rarely numbers
    Rule("ignore_instructions", "injection", "an instruction to ignore previous instructions",
         r"(?i:\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|the|your|of|every)\s+){0,3}"
         r"(?:previous|prior|above|earlier|preceding|original|system|developer)\s+"
         r"(?:instructions?|prompts?|messages?|directions|directives|rules|guidelines|context)\b)"),
    Rule("new_instructions", "injection", "text announcing new instructions for the model",
         r"(?i:\b(?:new|updated|real|actual)\s+(?:system\s+)?instructions\s*:)"),
    Rule("conceal_from_user", "injection", "an instruction to hide something from the user",
         r"(?i:\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention|reveal|show|notify|alert)\s+"
         r"(?:(?:this|it|anything)\s+(?:to\s+)?)?(?:the\s+)?user\b)"),
    Rule("instruction_tag", "injection", "a pseudo-tag addressing the model (<IMPORTANT>, <system>)",
         r"(?i:</?(?:important|system|system[_-]?prompt|instructions?|admin|assistant)>)"),
    Rule("unicode_tags", "injection", "invisible Unicode tag characters (U+E0000-E007F)",
         r"(?P<flag>\x{1F3F4})?[\x{E0000}-\x{E007F}]+"),
    # secrets: provider formats, most specific first
    Rule("private_key", "secret", "a PEM private key block",
         r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?:[^\x00]*?-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|[^\x00]*)"),
    Rule("aws_access_key", "secret", "an AWS access key id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    Rule("google_api_key", "secret", "a Google API key", rf"\bAIza{_RUN}{{35}}"),
    Rule("google_oauth_token", "secret", "a Google OAuth access token", rf"\bya29\.{_RUN}{{20,}}"),
    Rule("google_client_secret", "secret", "a Google OAuth client secret", rf"\bGOCSPX-{_RUN}{{28}}"),
    Rule("azure_storage_key", "secret", "an Azure storage account key",
         r"(?i:AccountKey)\s*=\s*(?P<value>[A-Za-z0-9+/]{86}==)"),
    Rule("azure_client_secret", "secret", "a Microsoft Entra client secret",
         r"\b[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}"),
    Rule("github_token", "secret", "a GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    Rule("gitlab_token", "secret", "a GitLab token",
         r"\bgl(?:pat|ptt|dt|rt|soat|ft|imt|oas|cbt|agent)-[0-9A-Za-z_.-]{20,}"),
    Rule("slack_token", "secret", "a Slack token", r"\bxox[abposre]-[0-9A-Za-z-]{10,}"),
    Rule("slack_webhook", "secret", "a Slack webhook URL",
         r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}"),
    Rule("stripe_key", "secret", "a Stripe API key", r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}"),
    Rule("stripe_webhook_secret", "secret", "a Stripe webhook signing secret", r"\bwhsec_[0-9A-Za-z]{24,}"),
    Rule("anthropic_key", "secret", "an Anthropic API key", rf"\bsk-ant-[a-z]{{2,10}}[0-9]{{2}}-{_RUN}{{32,}}"),
    Rule("openai_key", "secret", "an OpenAI API key",
         rf"\bsk-(?:(?:proj|svcacct|admin)-{_RUN}{{40,}}|{_RUN}{{20,}}T3BlbkFJ{_RUN}{{20,}}|[0-9A-Za-z]{{48}}\b)"),
    Rule("huggingface_token", "secret", "a Hugging Face token", r"\bhf_[A-Za-z]{34}\b"),
    Rule("npm_token", "secret", "an npm access token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    Rule("pypi_token", "secret", "a PyPI API token", rf"\bpypi-AgEIcHlwaS5vcmc{_RUN}{{50,}}"),
    Rule("sendgrid_key", "secret", "a SendGrid API key", rf"\bSG\.{_RUN}{{22}}\.{_RUN}{{43}}\b"),
    Rule("jwt", "secret", "a JSON Web Token", rf"\beyJ{_RUN}{{8,}}\.{_RUN}{{8,}}\.{_RUN}*"),
    Rule("bearer_token", "secret", "a Bearer credential",
         r"\b(?i:bearer)[ \t]+(?P<value>[0-9A-Za-z._~+/-]{20,}=*)"),
    Rule("url_password", "secret", "a password in a URL (a connection string)",
         rf"\b[A-Za-z][A-Za-z0-9+.-]*://[^{_NO}/:@]*:(?P<value>[^{_NO}/@]+)@"),
    Rule("url_secret_param", "secret", "a credential in a URL parameter",
         r"[?&](?i:sig|signature|x-amz-signature|x-amz-security-token|x-amz-credential|token|access_token"
         rf"|id_token|refresh_token|api_key|apikey|client_secret|password|secret)=(?P<value>[^{_NO}&#]{{8,}})"),
    Rule("password", "secret", "a password, or a secret under a key naming one (key = value)",
         r"(?P<key>[A-Za-z0-9_.-]*(?i:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
         r"|private[_-]?key|signing[_-]?key|credentials?|auth|cookie|session|bearer|jwt)[A-Za-z0-9_.-]*)"
         r"[\"']?[ \t]*[:=][ \t]*(?:\"(?P<value_q>[^\"\x00\\\n]+)\"|'(?P<value>[^'\x00\\\n]+)'"
         rf"|(?P<value_u>[^{_NO},;&\\\]}}]+))"),
    # personal data: national ids before payment cards (a 15-digit NIR would otherwise be a card candidate)
    Rule("email", "pii", "an email address", r"[\pL\pN._%+-]+@[\pL\pN-]+(?:\.[\pL\pN-]+)*\.[\pL]{2,}\b"),
    Rule("us_ssn", "pii", "a US social security number", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"),
    Rule("fr_nir", "pii", "a French social security number (NIR)",
         r"\b[12] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[ABab]) ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}\b"),
    Rule("es_dni", "pii", "a Spanish DNI", r"\b[0-9]{8}-?[A-Z]\b"),
    Rule("es_nie", "pii", "a Spanish NIE", r"\b[XYZ]-?[0-9]{7}-?[A-Z]\b"),
    Rule("it_fiscal_code", "pii", "an Italian codice fiscale",
         r"\b[A-Z]{6}[0-9LMNP-V]{2}[ABCDEHLMPRST][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]\b"),
    Rule("fi_hetu", "pii", "a Finnish personal identity code (HETU)", r"\b[0-9]{6}[-+ABCDEFYXWVU][0-9]{3}[0-9A-Y]\b"),
    Rule("se_personnummer", "pii", "a Swedish personal identity number", r"\b(?:[0-9]{2})?[0-9]{6}[-+][0-9]{4}\b"),
    Rule("iban", "pii", "an IBAN", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b"),
    Rule("phone", "pii", "an international phone number", r"\+[1-9](?:[ .()-]{0,2}[0-9]){6,14}\b"),
    Rule("phone_nanp", "pii", "a North American phone number",
         r"(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}\b"),
    Rule("payment_card", "pii", "a payment card number", r"\b[2-6][0-9](?:[ -]?[0-9]){11,17}\b"),
)  # fmt: skip
"""Every rule, in the order that decides which one reports a match (RE2 leftmost-first: the match
that starts first wins; at one start, the rule listed first)."""

_BY_ID = {r.id: r for r in RULES}
_VALUE_GROUPS = ("value", "value_q", "value_u")
_SHORTEST = 6  # no rule matches fewer characters (an email a@b.co)
_SECRETS: frozenset[Kind] = frozenset(("secret",))
_KEYED = frozenset({"password", "secret_assignment"})
_WHOLE = frozenset({"unicode_tags", "email"})  # turned down as a whole (an emoji flag, an scp remote)


def rule(rule_id: str) -> Rule:
    """The rule ``rule_id``. A check may report an id no pattern carries (``secret_assignment``, a
    match of the keyed ``password`` rule): that is a secret's too."""
    return _BY_ID.get(rule_id) or Rule(rule_id, "secret", "a generated secret under a key naming a secret", "")


@dataclass(frozen=True, slots=True)
class Detection:
    """One thing found: ``rule`` (its id), ``kind``, and ``start``/``end``, the character offsets of
    the part to replace in the scanned text."""

    rule: str
    kind: Kind
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Scanner:
    """One compiled pattern (the rules of some kinds) and where each rule's groups are in it.

    ``regexp`` is the binding's own ``RE2`` object (``re2._re2``, what ``re2.compile`` wraps): its
    ``Match`` returns the spans of every group in one call, where the wrapper's match object costs a
    call (and a group count) per group."""

    regexp: Any
    rules: tuple[tuple[Rule, int, tuple[int, ...], int, int], ...]  # rule, group, value groups, key, flag

    def search(self, data: bytes, pos: int = 0) -> list[tuple[int, int]] | None:
        """The spans of every group of the first match in ``data[pos:]`` (byte offsets into ``data``,
        which stays the context of ``\\b``), or ``None``."""
        spans: list[tuple[int, int]] = self.regexp.Match(_UNANCHORED, data, pos, len(data))
        return None if spans[0][0] < 0 else spans


_UNANCHORED = _re2.RE2.Anchor.UNANCHORED


@functools.lru_cache(maxsize=8)
def _scanner(kinds: frozenset[Kind]) -> _Scanner:
    chosen = [r for r in RULES if r.kind in kinds]
    parts = []
    for n, r in enumerate(chosen):
        pattern = r.pattern
        for name in (*_VALUE_GROUPS, "key", "flag"):
            pattern = pattern.replace(f"(?P<{name}>", f"(?P<{name}{n}>")
        parts.append(f"(?P<r{n}>{pattern})")
    options = re2.Options()
    options.max_mem = 64 << 20  # room for the DFA of every rule (RE2 falls back to a slower NFA past it)
    regexp = _re2.RE2("|".join(parts).encode(), options)
    if not regexp.ok():
        raise ValueError(f"a content rule does not compile: {regexp.error()}")
    index = {name.decode(): group for name, group in regexp.NamedCapturingGroups()}
    rules = tuple(
        (r, index[f"r{n}"], tuple(index[f"{g}{n}"] for g in _VALUE_GROUPS if f"{g}{n}" in index),
         index.get(f"key{n}", 0), index.get(f"flag{n}", 0))
        for n, r in enumerate(chosen)
    )  # fmt: skip
    return _Scanner(regexp, rules)


def detect(text: str, kinds: frozenset[Kind] = ALL_KINDS) -> list[Detection]:
    """Every detection of the rules of ``kinds`` in ``text``, in order, not overlapping.

    A candidate its check turns down is passed over and the scan goes on from just after its start
    (from its value, for a keyed assignment), so a card written after an order number, or a
    ``Bearer`` token after an ``Authorization:`` key, is still found. After ``CHECK_BUDGET``
    candidates turned down in one text, the rest are taken without their check (fail closed: a text
    made of near misses, each costing a checksum or a phone-number parse, cannot make the scan slow;
    it is over-redacted instead).
    """
    if len(text) < _SHORTEST or not kinds:
        return []
    scanner = _scanner(kinds)
    data = text.encode("utf-8", "surrogatepass")
    match = scanner.search(data)
    if match is None:  # the usual case: one DFA scan
        return []
    chars = _Chars(data, ascii_only=len(data) == len(text))
    found: list[Detection] = []
    budget = CHECK_BUDGET
    while match is not None:
        rule_, start, stop, value, key, flagged = _which(scanner, match)
        check = CHECKS.get(rule_.id) if budget > 0 else None
        if check is None:
            hit: tuple[str, int, int] | None = (rule_.id, 0, 0)
        else:
            following = data[value[1] : value[1] + 2].decode("ascii", "replace")
            keyed = _decode(data, key) if key[0] >= 0 else ""
            hit = check(Candidate(_decode(data, value), key=keyed, following=following, flagged=flagged))
        if hit is None:  # turned down: look again just after its start (its value, for a keyed one)
            budget -= 1
            match = scanner.search(data, _resume(data, rule_, start, stop, value, key))
            continue
        reported, a, b = hit
        if key[0] >= 0:  # a keyed value that is a known format is reported as that format
            reported = _format_of(_decode(data, value)) or reported
        head = chars.at(value[0])
        if check is None:  # the whole value
            found.append(Detection(reported, rule_.kind, head, chars.at(value[1])))
        else:  # a and b count characters of the value
            found.append(Detection(reported, rule_.kind, head + a, head + b))
        match = scanner.search(data, max(stop, start + 1)) if stop < len(data) else None
    return found


CHECK_BUDGET = 1_000
"""Candidates a text may have turned down by their checks before the rest are taken unchecked."""


class _Chars:
    """Character offsets of byte offsets into UTF-8 ``data``, counted on from the last one asked
    (detections come in order, so a text is decoded about once)."""

    __slots__ = ("_byte", "_char", "_data", "_identity")

    def __init__(self, data: bytes, *, ascii_only: bool) -> None:
        self._data, self._identity = data, ascii_only
        self._byte = self._char = 0

    def at(self, offset: int) -> int:
        if self._identity:
            return offset
        if offset < self._byte:
            self._byte = self._char = 0
        self._char += len(self._data[self._byte : offset].decode("utf-8", "surrogatepass"))
        self._byte = offset
        return self._char


def _format_of(value: str) -> str | None:
    """The rule of the one provider format ``value`` holds (``pypi-...`` under ``password =``), if any."""
    inner = detect(value, _SECRETS)
    return inner[0].rule if len(inner) == 1 and inner[0].rule not in _KEYED else None


def _resume(data: bytes, rule_: Rule, start: int, stop: int, value: tuple[int, int], key: tuple[int, int]) -> int:
    """Where to look again after a candidate was turned down: its value for a keyed assignment (the
    value may hold another rule's match), the next character after its start for the others (a
    card may start inside an order number's candidate), past it when it was a whole (an emoji flag)."""
    if rule_.id in _WHOLE:
        return stop
    if key[0] >= 0:
        return value[0]
    nxt = start + 1
    while nxt < len(data) and 0x80 <= data[nxt] < 0xC0:  # not inside a UTF-8 sequence
        nxt += 1
    return nxt


def _decode(data: bytes, span: tuple[int, int]) -> str:
    return data[span[0] : span[1]].decode("utf-8", "surrogatepass")


def _which(
    scanner: _Scanner, spans: list[tuple[int, int]]
) -> tuple[Rule, int, int, tuple[int, int], tuple[int, int], bool]:
    """The rule a match is of: ``(rule, start, end, value span, key span, flag matched)`` (byte
    offsets; a span that did not take part is ``(-1, -1)``)."""
    for rule_, group, values, key, flag in scanner.rules:
        start, stop = spans[group]
        if start < 0:
            continue
        value = next((spans[g] for g in values if spans[g][0] >= 0), (start, stop))
        return rule_, start, stop, value, spans[key] if key else (-1, -1), bool(flag) and spans[flag][0] >= 0
    raise AssertionError("a match of no rule")  # pragma: no cover - one alternative always took part


def findings(text: str, kinds: frozenset[Kind] = ALL_KINDS, path: str = "") -> list[Finding]:
    """``detect`` as ``Finding`` values: the rule id, the severity of its kind (secrets and
    injection ``high``, personal data ``medium``), what it found, ``path`` (a JSON pointer to the
    text, RFC 6901), and as the excerpt the redaction marker (a secret's or person's value is never
    repeated) or, for injected instructions, the text itself clipped to 80 characters with invisible
    characters shown as ``\\u{...}``."""
    out: list[Finding] = []
    for d in detect(text, kinds):
        if d.kind == "injection":
            excerpt = "".join(c if c.isprintable() else f"\\u{{{ord(c):x}}}" for c in text[d.start : d.end])[:80]
        else:
            excerpt = marker(d.rule)
        out.append(Finding(d.rule, _SEVERITY[d.kind], rule(d.rule).title, path, excerpt))
    return out


def marker(rule_id: str) -> str:
    """What replaces a redacted value: ``[REDACTED:<rule>]``."""
    return f"[REDACTED:{rule_id}]"
