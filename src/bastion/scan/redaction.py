"""Redaction of MCP results: the text a client would see, scanned and rewritten.

Issue 15, "Result inspection and redaction". ``inspect_message`` takes one upstream-to-client
message and finds the texts in it that reach the client and, through it, the model:

- a ``tools/call`` result (MCP 2025-11-25 server/tools ``CallToolResult``): each ``text`` content
  block, each embedded resource's ``resource.text``, and every string in ``structuredContent``;
  the same inlined in a ``tasks/get`` result (``result.result``, the 2026-07-28 tasks extension);
- a ``resources/read`` result: each ``contents[].text``;
- a ``prompts/get`` result: each ``messages[].content`` text and embedded resource text;
- ``notifications/message`` (logging: every string in ``params.data``) and
  ``notifications/progress`` (``params.message``), which ride the same SSE stream as the result;
- the server-to-client ``sampling/createMessage`` (its messages and ``systemPrompt``: what the
  server puts before the client's model) and ``elicitation/create`` (``params.message``);
- a JSON-RPC error answering one of those requests: its ``message`` and every string of ``data``.

All of them are scanned in ONE pass (``bastion.scan.content.detect`` on the texts joined by NUL,
which no rule crosses). Each secret or personal datum of a class being redacted is replaced by
``[REDACTED:<rule>]``; a string of ``structuredContent`` under a key naming a secret is checked
as a keyed value too (``checks.keyed_secret``: the same test as ``"password": "..."`` in text, so
the text block a tool writes from its structured content is redacted alike). Numbers, booleans and
keys are never changed (the result still matches the tool's ``outputSchema``). Instructions aimed
at the model are counted and, in ``replace`` mode, the whole text holding them is replaced by a
notice. The input message is never changed: a changed message is a copy, sharing every part it
did not change.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.scan.checks import keyed_secret
from bastion.scan.content import Detection, Kind, detect, marker
from bastion.scan.definitions import scan_content
from bastion.scan.redact_classes import RedactClass
from bastion.scan.texts import Path, rewritten, texts_of

__all__ = ["InjectionMode", "Inspection", "inspect_message"]

InjectionMode = Literal["flag", "replace"]
_KINDS: dict[RedactClass, Kind] = {"secrets": "secret", "pii": "pii"}


@dataclass(slots=True)
class Inspection:
    """What ``inspect_message`` found and did: ``redacted`` (occurrences replaced, by rule: a value
    present in both a text block and ``structuredContent`` counts twice), ``injection`` (instructions
    found, by rule) and ``replaced`` (texts replaced by the notice). ``message`` is what to relay: the
    input itself when nothing changed."""

    message: dict[str, Any]
    redacted: Counter[str] = field(default_factory=Counter)
    injection: Counter[str] = field(default_factory=Counter)
    replaced: int = 0


def inspect_message(
    message: dict[str, Any],
    method: str | None,
    classes: frozenset[RedactClass],
    injection: InjectionMode,
    notice: str,
    *,
    thorough: bool = False,
) -> Inspection:
    """Scan ``message`` and redact it (see the module docstring).

    ``method`` is the method of the request a response answers (``tools/call``, ``tasks/get``,
    ``resources/read``, ``prompts/get``; others are left alone), ``None`` for a notification (its own method decides);
    ``classes`` what to redact; ``injection`` what to do with instructions found; ``notice`` the text
    that replaces one; ``thorough``: each text also goes through the definition scanner's wording
    and Unicode analysis (``bastion.scan.definitions.scan_content``; its high findings count as
    instructions, rule ``definition:<rule>``), about 5-8 ms per 4 KB of text where the fast rules
    cost microseconds. Never raises on odd shapes: what is not the expected shape is not scanned.
    """
    located = texts_of(message, method, track=False)
    inspection = Inspection(message)
    if located is None or not located[1].texts:
        return inspection
    root_key, texts = located
    kinds: frozenset[Kind] = frozenset((*(_KINDS[c] for c in classes), "injection"))
    starts: list[int] = []
    offset = 0
    for text in texts.texts:
        starts.append(offset)
        offset += len(text) + 1
    per_text: dict[int, list[Detection]] = {}
    for found in detect("\x00".join(texts.texts), kinds):
        n = bisect.bisect_right(starts, found.start) - 1
        if found.end <= starts[n] + len(texts.texts[n]):  # never across two texts (no rule crosses a NUL)
            local = Detection(found.rule, found.kind, found.start - starts[n], found.end - starts[n])
            per_text.setdefault(n, []).append(local)
    if thorough:
        for n, text in enumerate(texts.texts):
            for finding in scan_content(text):
                if finding.severity == "high":
                    per_text.setdefault(n, []).append(Detection(f"definition:{finding.rule}", "injection", 0, 0))
    if "secrets" in classes:
        for n, key in texts.keyed():
            rule = keyed_secret(key, texts.texts[n])
            if rule is not None:  # reported as the provider format it is in, if it is in one (as in text)
                formats = [d.rule for d in per_text.get(n, ()) if d.kind == "secret"]
                per_text[n] = [Detection(formats[0] if len(formats) == 1 else rule, "secret", 0, len(texts.texts[n]))]
    if not per_text:  # the usual case: nothing found, no path needed
        return inspection
    placed = texts_of(message, method, track=True)  # the same walk again, placing each text
    if placed is None:  # pragma: no cover - the same message gives the same answer
        return inspection
    texts = placed[1]
    changes: dict[Path, str] = {}
    for n, detections in sorted(per_text.items()):
        text = texts.texts[n]
        new = _apply(text, detections, inspection, injection, notice)
        if new != text:
            changes[texts.path(n)] = new
    if changes:
        inspection.message = {**message, root_key: rewritten(message[root_key], changes)}
    return inspection


def _apply(text: str, detections: list[Detection], inspection: Inspection, mode: InjectionMode, notice: str) -> str:
    """``text`` with its secrets and personal data replaced by markers, or the notice in its place
    when it holds instructions and ``mode`` is ``replace``; counts what was done."""
    redactions = [d for d in detections if d.kind != "injection"]
    instructions = [d for d in detections if d.kind == "injection"]
    inspection.redacted.update(d.rule for d in redactions)
    inspection.injection.update(d.rule for d in instructions)
    if instructions and mode == "replace":
        inspection.replaced += 1
        return notice
    for d in sorted(redactions, key=lambda d: d.start, reverse=True):
        text = text[: d.start] + marker(d.rule) + text[d.end :]
    return text
