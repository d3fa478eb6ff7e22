"""Invisible and deceptive Unicode, and terminal escape sequences, in definition text.

What a person reviewing a definition does not see but a model reads: tag characters
(U+E0000 to U+E007F, which spell hidden ASCII), explicit bidirectional controls (the Trojan Source
reordering, CVE-2021-42574), zero-width and other format characters (general category ``Cf``)
outside the places scripts and emoji need them, runs of variation selectors, control
characters, and words that mix scripts with look-alike letters (``paypal`` spelled with a
Cyrillic ``a``, U+0430). Character properties come from ``unicodedata`` (general category, bidirectional class)
and the look-alikes from the Unicode confusables data shipped by ``confusable_homoglyphs``
(UTS #39); no code point lists are kept here. ANSI escape sequences (ECMA-48: ESC, CSI)
rewrite what a terminal client shows and are reported as ``ansi-escape``.

``fold`` gives the text the language detectors match: invisible characters removed, NFKC,
look-alikes mapped to their Latin letters, case-folded, whitespace collapsed.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from confusable_homoglyphs import categories, confusables

from bastion.scan.findings import Finding, Severity

__all__ = ["UnicodeReport", "excerpt", "fold", "inspect_unicode", "skeleton"]

_TAGS = range(0xE0000, 0xE0080)
_BIDI_CONTROLS = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})
_ESC = re.compile(r"\x1b|\x9b")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_PARAGRAPH = re.compile(r"\s*\n\s*\n\s*")
_SPACE = re.compile(r"\s+")
_JOINERS = frozenset({0x200C, 0x200D})  # ZWNJ, ZWJ: needed by Arabic and Indic scripts and emoji sequences
_VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0))
EXCERPT_CHARS = 160
_SCRIPT_MIXES = (  # scripts written together (UTS #39 "highly restrictive"): Japanese, Korean, Chinese
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)
MAX_WORDS = 400  # distinct non-ASCII words checked for mixed scripts per string
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class UnicodeReport:
    """What ``inspect_unicode`` found in one string: the findings and, for tag characters,
    the ASCII text they spell (scanned again by the caller)."""

    findings: tuple[Finding, ...]
    hidden_text: str = ""


def excerpt(text: str, start: int = 0, end: int | None = None) -> str:
    """``text[start:end]`` clipped to about 160 characters, with invisible, format, control and
    bidirectional characters shown as ``\\u{XXXX}`` so the excerpt cannot hide or reorder anything."""
    end = len(text) if end is None else end
    start = max(0, min(start, len(text)))
    clipped = text[start : min(end, start + EXCERPT_CHARS)]
    shown = "".join(_visible(ch) for ch in clipped)
    return shown + ("…" if end - start > EXCERPT_CHARS else "")


def _visible(ch: str) -> str:
    if ch in "\n\t":
        return " "
    if ch.isascii() and ch.isprintable():
        return ch
    if unicodedata.category(ch) in ("Cf", "Cc", "Co", "Cn", "Cs", "Zl", "Zp", "Mn") and not _is_combining_letter(ch):
        return f"\\u{{{ord(ch):04X}}}"
    return ch


def _is_combining_letter(ch: str) -> bool:
    # Combining accents are part of ordinary words; variation selectors are shown.
    return unicodedata.category(ch) == "Mn" and not _is_variation_selector(ord(ch))


def _is_variation_selector(code: int) -> bool:
    return any(code in block for block in _VARIATION_SELECTORS)


@functools.cache
def _latin_lookalikes() -> dict[int, str]:
    """Each character the confusables data says looks like an ASCII letter or digit, mapped to it
    (of several, the one with the same letter name and case: Cyrillic U+0456 becomes ``i``, not ``l``)."""
    table: dict[int, str] = {}
    for char, glyphs in confusables.confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        candidates = [g.get("c", "") for g in glyphs]
        candidates = [c for c in candidates if len(c) == 1 and c.isascii() and c.isalnum()]
        letter = unicodedata.name(char, "").rsplit(" ", 1)[-1]
        if len(letter) == 1 and letter.isascii() and letter.isalpha() and letter not in candidates:
            candidates.insert(0, letter if char.isupper() else letter.lower())
        if candidates:
            table[ord(char)] = max(candidates, key=lambda c: (c.upper() == letter, c.isupper() == char.isupper()))
    return table


@functools.cache
def _cf_table(chars: frozenset[str]) -> dict[int, None]:
    return {ord(c): None for c in chars}


def _invisible(ch: str) -> bool:
    code = ord(ch)
    return unicodedata.category(ch) == "Cf" or code in _TAGS or _is_variation_selector(code)


def fold(text: str) -> str:
    """The form the language detectors match: format characters (zero-width, bidi, tags) and
    variation selectors removed, NFKC (full-width and mathematical letters become plain),
    look-alike letters mapped to Latin, a paragraph break made one newline and any other run of
    whitespace one space (so a sentence wrapped over lines reads as one). Case is kept."""
    if not text.isascii():
        hidden = frozenset(ch for ch in set(text) if not ch.isascii() and _invisible(ch))
        if hidden:
            text = text.translate(_cf_table(hidden))
        text = unicodedata.normalize("NFKC", text)
        if not text.isascii():
            text = text.translate(_latin_lookalikes())
    return "\n".join(_SPACE.sub(" ", part).strip() for part in _PARAGRAPH.split(text))


def skeleton(name: str) -> str:
    """A name's look-alike skeleton for shadowing checks: folded, and ``-``, ``_``, ``.``,
    spaces removed (``Send-Email`` and ``send_em\u0430il`` share ``sendemail``)."""
    return re.sub(r"[\s_.\-]+", "", fold(name)).casefold()


def inspect_unicode(text: str, *, identifier: bool = False) -> UnicodeReport:
    """Findings for the invisible, bidirectional, control and mixed-script characters of
    ``text`` (``identifier``: a name or property name, where any mixed-script look-alike is an
    attack). Never raises; text whose characters are all ordinary is answered after one pass."""
    findings: list[Finding] = []
    escape = _ESC.search(text)
    if escape:
        findings.append(Finding("ansi-escape", "high", "terminal escape sequence (ESC/CSI): it can hide or rewrite "
                                "text in terminal clients",
                                excerpt=excerpt(text, escape.start() - 20, escape.start() + 60)))  # fmt: skip
    if text.isascii():
        control = _ASCII_CONTROL.search(text)
        if control:
            findings.append(_controls(text, [control.start()]))
        return UnicodeReport(tuple(findings))
    odd = frozenset(ch for ch in set(text) if _odd(ch))
    hidden = None
    if odd:
        hidden = _tag_text(text, odd)
        if hidden is not None:
            first = next(i for i, ch in enumerate(text) if ord(ch) in _TAGS)
            message = f"Unicode tag characters spell hidden text: {hidden[:120]!r}"
            findings.append(Finding("invisible-unicode", "high", message,
                                    excerpt=excerpt(text, first - 20, first + 40)))  # fmt: skip
        positions = [i for i, ch in enumerate(text) if ch in odd]
        findings.extend(_bidi(text, positions))
        findings.extend(_format_characters(text, positions))
        findings.extend(_variation_runs(text, positions))
        controls = [i for i in positions if unicodedata.category(text[i]) == "Cc" and text[i] not in "\t\n\r\x1b\x9b"]
        if controls:
            findings.append(_controls(text, controls))
    findings.extend(_mixed_scripts(text, identifier))
    return UnicodeReport(tuple(findings), hidden or "")


def _odd(ch: str) -> bool:
    """Whether ``ch`` is a format, control or variation-selector character (looked at closely)."""
    return unicodedata.category(ch) in ("Cf", "Cc") or _is_variation_selector(ord(ch))


def _tag_text(text: str, odd: frozenset[str]) -> str | None:
    if not any(ord(ch) in _TAGS for ch in odd):
        return None
    tags = [ord(ch) for ch in text if ord(ch) in _TAGS]
    if not tags:
        return None
    return "".join(chr(code - 0xE0000) for code in tags if 0xE0020 <= code <= 0xE007E)


def _controls(text: str, positions: list[int]) -> Finding:
    return Finding("invisible-unicode", "medium", f"{len(positions)} control character(s) (backspace, NUL, ...) that "
                   "can hide or overwrite text",
                   excerpt=excerpt(text, positions[0] - 20, positions[0] + 40))  # fmt: skip


def _bidi(text: str, odd: list[int]) -> Iterator[Finding]:
    positions = [i for i in odd if unicodedata.bidirectional(text[i]) in _BIDI_CONTROLS]
    if positions:
        yield Finding("bidi-control", "high", f"{len(positions)} explicit bidirectional control(s) (embedding, "
                      "override "
                      "or isolate): the text a person sees is reordered (Trojan Source)",
                      excerpt=excerpt(text, positions[0] - 20, positions[0] + 40))  # fmt: skip


def _legitimate_format(text: str, i: int) -> bool:
    """Whether the format character at ``i`` does a visible job: a joiner between letters of a
    script that uses joiners or inside an emoji sequence, a soft hyphen inside a word, a leading BOM,
    or a left-to-right/right-to-left mark (category ``Cf``, bidirectional class L/R/AL) in
    right-to-left text."""
    ch = text[i]
    code = ord(ch)
    before = text[i - 1] if i > 0 else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if code == 0xFEFF:
        return i == 0
    if unicodedata.bidirectional(ch) in ("L", "R", "AL"):  # LRM, RLM, ALM
        return any(unicodedata.bidirectional(c) in ("R", "AL") for c in text[max(0, i - 40) : i + 40])
    if code == 0x00AD:
        return before.isalpha() and after.isalpha()
    if code in _JOINERS:

        def non_latin_letter(c: str) -> bool:
            return c.isalpha() and not c.isascii() and categories.alias(c) not in ("LATIN", "COMMON")

        def pictograph(c: str) -> bool:
            return bool(c) and (unicodedata.category(c) == "So" or _is_variation_selector(ord(c)) or ord(c) >= 0x1F000)

        return (non_latin_letter(before) and non_latin_letter(after)) or pictograph(before) or pictograph(after)
    return False


def _format_characters(text: str, odd: list[int]) -> Iterator[Finding]:
    suspicious = [i for i in odd
                  if unicodedata.category(text[i]) == "Cf" and ord(text[i]) not in _TAGS
                  and unicodedata.bidirectional(text[i]) not in _BIDI_CONTROLS
                  and not _legitimate_format(text, i)]  # fmt: skip
    if not suspicious:
        return
    runs = sum(1 for a, b in itertools.pairwise(suspicious) if b == a + 1)
    severity: Severity = "high" if len(suspicious) >= 3 or runs else "medium"
    names = sorted({unicodedata.name(text[i], f"U+{ord(text[i]):04X}") for i in suspicious})
    shown = ", ".join(names[:4])
    yield Finding("invisible-unicode", severity, f"{len(suspicious)} invisible format character(s) ({shown})"
                  + (": a run of them can carry hidden data" if severity == "high" else ""),
                  excerpt=excerpt(text, suspicious[0] - 20, suspicious[0] + 40))  # fmt: skip


def _variation_runs(text: str, odd: list[int]) -> Iterator[Finding]:
    previous = -2
    for i in odd:
        ch = text[i]
        if _is_variation_selector(ord(ch)):
            if previous == i - 1 or (ord(ch) >= 0xE0100 and not _ideograph(text[i - 1] if i else "")):
                yield Finding("invisible-unicode", "high", "variation selectors used as invisible data "
                              "(a run, or supplementary selectors after a non-ideograph)",
                              excerpt=excerpt(text, i - 20, i + 40))  # fmt: skip
                return
            previous = i


def _ideograph(ch: str) -> bool:
    return bool(ch) and categories.alias(ch) in ("CJK", "HAN")


def _mixed_scripts(text: str, identifier: bool) -> Iterator[Finding]:
    seen: set[str] = set()
    for match in _WORD.finditer(text):
        word = match.group()
        if word.isascii() or len(word) < 2 or word in seen:
            continue
        seen.add(word)
        if len(seen) > MAX_WORDS:
            break
        aliases = categories.unique_aliases(word) - {"COMMON", "INHERITED"}
        if any(aliases <= allowed for allowed in _SCRIPT_MIXES) or not confusables.is_dangerous(word):
            continue
        scripts = ", ".join(sorted(a.title() for a in aliases))
        severity: Severity = "high" if identifier else "medium"
        yield Finding("confusable", severity, f"word mixes scripts ({scripts}) with look-alike letters: it reads as "
                      f"{fold(word)!r}", excerpt=excerpt(text, match.start() - 20, match.end() + 20))  # fmt: skip
        return
