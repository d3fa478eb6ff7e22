"""What changed between a pinned definition and the one held for review: words and JSON members.

Sans-IO, for ``bastion tools diff`` and the portal's review page (issue 15). A definition's
``description`` (and ``title``) is compared word by word (``difflib.SequenceMatcher`` over words
and the whitespace between them, so a sentence slipped into a paragraph shows as that sentence);
everything else (``inputSchema``, ``outputSchema``, ``annotations``, ``_meta``, ...) member by
member, each change named by its JSON pointer (RFC 6901) with the value before and after.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "TEXT_MEMBERS",
    "DefinitionDiff",
    "JsonChange",
    "WordOp",
    "definition_diff",
    "json_changes",
    "visible",
    "word_diff",
]

TEXT_MEMBERS = ("title", "description")
"""The members compared word by word."""

WordOp = tuple[Literal["same", "removed", "added"], str]
"""One run of a word diff: kept, only in the pinned text, or only in the new one."""

_WORDS = re.compile(r"\s+|[^\s]+")
_HIDDEN = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})
"""Unicode general categories a reader does not see (controls, format characters such as zero-width
and bidi controls and tag characters, private use, unassigned, surrogates, line and paragraph separators)."""


def visible(text: str) -> str:
    """``text`` as a reviewer must see it: each character a reader would not see (``_HIDDEN``, by
    ``unicodedata``; newline and tab excepted) written as ``\\u{XXXX}``, so hidden instructions
    and ANSI escapes show."""
    if text.isprintable():
        return text
    return "".join(
        f"\\u{{{ord(ch):04X}}}" if ch not in "\n\t" and unicodedata.category(ch) in _HIDDEN else ch for ch in text
    )


def word_diff(old: str, new: str) -> list[WordOp]:
    """``old`` → ``new`` as runs of words kept, removed and added (concatenating the ``same`` and
    ``removed`` runs gives ``old``; the ``same`` and ``added`` runs give ``new``)."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    ops: list[WordOp] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            ops.append(("removed", "".join(a[i1:i2])))
        if j2 > j1:
            ops.append(("added", "".join(b[j1:j2])))
    return ops


@dataclass(frozen=True, slots=True)
class JsonChange:
    """One member that differs: ``path`` (a JSON pointer, RFC 6901), ``op`` (``added``, ``removed``,
    ``changed``) and the values ``before`` and ``after`` (``None`` where there is none)."""

    path: str
    op: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None


def _pointer(path: str, key: object) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def json_changes(before: Any, after: Any, path: str = "") -> list[JsonChange]:
    """The members that differ between two JSON values, deepest first found (objects by key, arrays
    by index); a value whose type changed is one ``changed``."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[JsonChange] = []
        for key in sorted(before.keys() | after.keys(), key=str):
            where = _pointer(path, key)
            if key not in after:
                changes.append(JsonChange(where, "removed", before[key]))
            elif key not in before:
                changes.append(JsonChange(where, "added", None, after[key]))
            else:
                changes.extend(json_changes(before[key], after[key], where))
        return changes
    if isinstance(before, list) and isinstance(after, list):
        changes = []
        for index in range(max(len(before), len(after))):
            where = _pointer(path, index)
            if index >= len(after):
                changes.append(JsonChange(where, "removed", before[index]))
            elif index >= len(before):
                changes.append(JsonChange(where, "added", None, after[index]))
            else:
                changes.extend(json_changes(before[index], after[index], where))
        return changes
    if type(before) is not type(after) or before != after:
        return [JsonChange(path or "/", "changed", before, after)]
    return []


@dataclass(frozen=True, slots=True)
class DefinitionDiff:
    """A held definition against its pin: ``text`` the word diff of each of ``TEXT_MEMBERS`` that
    differs (against ``""`` when there is no pin), ``changes`` every other member that differs."""

    text: dict[str, list[WordOp]] = field(default_factory=dict)
    changes: list[JsonChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether nothing differs."""
        return not self.text and not self.changes


def definition_diff(pinned: Mapping[str, Any] | None, held: Mapping[str, Any]) -> DefinitionDiff:
    """What differs from ``pinned`` (``None``: nothing was pinned, so everything is added) to ``held``."""
    before = dict(pinned or {})
    text: dict[str, list[WordOp]] = {}
    for member in TEXT_MEMBERS:
        old, new = before.pop(member, None), held.get(member)
        if old != new:
            text[member] = word_diff(old if isinstance(old, str) else "", new if isinstance(new, str) else "")
    after = {key: value for key, value in held.items() if key not in TEXT_MEMBERS}
    return DefinitionDiff(text, json_changes(before, after))
