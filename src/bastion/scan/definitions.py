"""Definition scanning: the findings for one MCP tool, prompt, resource or resource template.

``scan_definition`` reads every string of a definition (MCP 2025-11-25 ``Tool``, ``Prompt``,
``Resource``, ``ResourceTemplate`` as JSON): name, title, description, URIs and MIME types,
prompt arguments, annotations, and in ``inputSchema``/``outputSchema`` every property name,
description, title, default, enum, example and const, and any other key or string a server put
there. Each string goes through the detectors:

- ``bastion.scan.unicode``: invisible and deceptive Unicode (``invisible-unicode``,
  ``bidi-control``, ``confusable``) and ``ansi-escape``;
- ``bastion.scan.encoded``: ``encoded-payload`` runs, decoded and scanned again;
- ``bastion.scan.language``: the wording of an attack, weighed here into ``hidden-instruction``,
  ``sensitive-reference``, ``exfiltration``, ``tool-shadowing``, ``command-payload`` and
  ``schema-poisoning``;
- ``abnormal-length`` for strings and definitions far beyond what a tool needs.

Severity: ``high`` is an attack with little doubt (a single decisive signal, such as telling the
model to keep something from the user, or an attack's combination, such as reaching a private key
file and passing it on); ``medium`` and ``low`` are suspicious. Pure and sans-IO: it never raises
on any JSON input (hostile sizes, depths and types are bounded and reported) and does not
download anything.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.scan import language
from bastion.scan.encoded import find_encoded
from bastion.scan.findings import SEVERITIES, DefinitionKind, Finding, Severity
from bastion.scan.language import Signals, same_clause, signals
from bastion.scan.secrets import find_secrets, mask
from bastion.scan.unicode import excerpt, fold, inspect_unicode, skeleton

__all__ = ["CONTENT_RULES", "MAX_STRING_SCANNED", "scan_content", "scan_definition"]

MAX_STRING_SCANNED = 64 * 1024
"""Characters of one string that are scanned; a longer string is reported (``abnormal-length``)."""
MAX_DEFINITION_CHARS = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 5_000
LONG_DESCRIPTION = 4_000
VERY_LONG_DESCRIPTION = 10_000

_VALUE_KEYS = frozenset({"default", "const", "enum", "examples", "example"})
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_KEYWORDS = frozenset({
    "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$comment", "$vocabulary", "type", "title",
    "description", "default", "const", "enum", "examples", "example", "format", "pattern", "properties",
    "patternProperties", "additionalProperties", "unevaluatedProperties", "propertyNames", "required", "items",
    "prefixItems", "additionalItems", "unevaluatedItems", "contains", "minContains", "maxContains", "minItems",
    "maxItems", "uniqueItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "allOf", "anyOf",
    "oneOf", "not", "if", "then", "else", "$defs", "definitions", "readOnly", "writeOnly", "deprecated",
    "contentEncoding", "contentMediaType", "contentSchema", "nullable",
})  # fmt: skip
_PROSE_KEY = re.compile(r"\S+(?:\s+\S+){3,}")
_OWN_PROMPT = re.compile(r"\byour (?:own |full |complete |entire |current |initial |original |hidden |exact )*"
                         r"(?:system prompt|system message|instructions|prompt|tool ?list|list of tools|tools|"
                         r"tool definitions|context window)\b", re.IGNORECASE)  # fmt: skip
_SENSITIVE_KEY = re.compile(
    r"\b(?:id (?:rsa|dsa|ecdsa|ed25519)|ssh (?:key|id|private)|private key|aws credentials|system (?:prompt|message)|"
    r"conversation(?: history)?|chat history|message history|previous messages|tools? list|list of tools|etc passwd|"
    r"env file|dot env|mcp json|credentials? file)\b"
)
_IDENTIFIER_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@dataclass(frozen=True, slots=True)
class _Text:
    """One string of a definition: its JSON pointer, its role, the string."""

    path: str
    role: str  # name | text | key | value | uri | icon
    value: str


def scan_definition(
    kind: DefinitionKind, definition: Mapping[str, Any], *, others: Collection[str] = ()
) -> tuple[Finding, ...]:
    """The findings for one definition, most severe first.

    ``kind``: what it is (``tool``, ``prompt``, ``resource``, ``resource_template``);
    ``definition``: the MCP 2025-11-25 object as JSON; ``others``: the names of the other tools
    Bastion knows (this route's and other routes'), for shadowing. Never raises: input that is
    not a JSON object, or that breaks a detector, gives a ``malformed-definition`` finding
    (high: a definition that cannot be read is not served)."""
    try:
        if not isinstance(definition, Mapping):
            return (Finding("malformed-definition", "high", f"a {kind} definition must be a JSON object"),)
        return _Scan(kind, definition, others).run()
    except Exception as exc:  # noqa: BLE001 - fail closed: a definition the scanner cannot read is reported, never raised
        return (Finding("malformed-definition", "high", f"the definition could not be scanned ({type(exc).__name__})"),)


CONTENT_RULES = frozenset({"hidden-instruction", "exfiltration", "tool-shadowing", "sensitive-reference",
                           "invisible-unicode", "bidi-control"})  # fmt: skip
"""The rules ``scan_content`` reports: what an instruction aimed at the model does, whatever carries it."""


def scan_content(text: str, *, others: Collection[str] = ()) -> tuple[Finding, ...]:
    """The definition detectors' findings on one text of a RESULT (a tool's output, a page it
    fetched), most severe first: the same wording and Unicode analysis as a description gets
    (``CONTENT_RULES`` only: a long text, a secret or an encoded run is ordinary in a result and is
    redaction's business), on the first ``MAX_STRING_SCANNED`` characters. ``others``: the tools
    Bastion knows (an instruction steering one of them). Never raises (a failure is no finding:
    the fast rules of ``bastion.scan.content`` still ran)."""
    try:
        scan = _Scan("tool", {}, others)
        scan._scan_text(_Text("", "text", text[:MAX_STRING_SCANNED]))
        return tuple(f for f in _ranked(scan.findings) if f.rule in CONTENT_RULES)
    except Exception:  # noqa: BLE001 - an extra check on top of the content rules; never breaks a reply
        return ()


def _pointer(parent: str, key: object) -> str:
    return f"{parent}/{str(key).replace('~', '~0').replace('/', '~1')}"


class _Scan:
    """The state of one ``scan_definition`` call."""

    def __init__(self, kind: DefinitionKind, definition: Mapping[str, Any], others: Collection[str]) -> None:
        self.kind = kind
        self.definition = definition
        name = definition.get("name")
        self.name = name if isinstance(name, str) else ""
        self.others = [o for o in others if isinstance(o, str)] if isinstance(others, Collection) else []
        self.other_names = frozenset(o.casefold() for o in self.others)
        self.findings: list[Finding] = []
        self.nodes = 0
        self.chars = 0
        self.truncated = False

    def run(self) -> tuple[Finding, ...]:
        for text in self._texts():
            self._scan_text(text)
        self._definition_level()
        return _ranked(self.findings)

    # -- collecting the strings ----------------------------------------------------------------

    def _texts(self) -> Iterator[_Text]:
        for key, value in self.definition.items():
            if not self._budget(0):
                break
            path = _pointer("", key)
            if not isinstance(key, str):
                yield _Text(path, "key", str(key))
            elif key not in ("name", "title", "description", "uri", "uriTemplate", "mimeType", "inputSchema",
                             "outputSchema", "annotations", "arguments", "icons", "_meta", "size"):  # fmt: skip
                yield _Text(path, "key", key)
            if key in ("inputSchema", "outputSchema"):
                yield from self._schema(value, path, 0)
            elif key == "name" and isinstance(value, str):
                yield _Text(path, "name", value)
            elif key in ("uri", "uriTemplate", "mimeType") and isinstance(value, str):
                yield _Text(path, "uri", value)
            elif key == "icons":
                yield from self._plain(value, path, 0, "icon")
            elif key == "arguments" and isinstance(value, list):
                for i, argument in enumerate(value):
                    if isinstance(argument, Mapping):
                        for k, v in argument.items():
                            role = "name" if k == "name" else "text"
                            yield from self._plain(v, _pointer(_pointer(path, i), k), 1, role)
                    else:
                        yield from self._plain(argument, _pointer(path, i), 1, "text")
            else:
                yield from self._plain(value, path, 0, "text")

    def _budget(self, depth: int) -> bool:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES or self.chars > MAX_DEFINITION_CHARS:
            self.truncated = True
            return False
        return True

    def _plain(self, value: object, path: str, depth: int, role: str) -> Iterator[_Text]:
        """Every string (and every key) under ``value`` with ``role``."""
        stack: list[tuple[object, str, int]] = [(value, path, depth)]
        while stack:
            node, at, level = stack.pop()
            if not self._budget(level):
                continue
            if isinstance(node, str):
                yield _Text(at, role, node)
            elif isinstance(node, Mapping):
                items = list(node.items())[:MAX_NODES]
                stack.extend((v, _pointer(at, k), level + 1) for k, v in reversed(items))
                if role != "icon":
                    yield from (_Text(_pointer(at, k), "key", str(k)) for k, _ in items)
            elif isinstance(node, (list, tuple)):
                stack.extend((v, _pointer(at, i), level + 1) for i, v in reversed(list(enumerate(node[:MAX_NODES]))))

    def _schema(self, schema: object, path: str, depth: int) -> Iterator[_Text]:
        """The strings of a JSON Schema: property names (``key``), values offered to the model
        (``value``: default, const, enum, examples) and everything else (``text``)."""
        stack: list[tuple[object, str, int]] = [(schema, path, depth)]
        while stack:
            node, at, level = stack.pop()
            if not self._budget(level):
                continue
            if isinstance(node, (list, tuple)):
                stack.extend((v, _pointer(at, i), level + 1) for i, v in reversed(list(enumerate(node[:MAX_NODES]))))
                continue
            if not isinstance(node, Mapping):
                if isinstance(node, str):
                    yield _Text(at, "text", node)
                continue
            for key, value in node.items():
                here = _pointer(at, key)
                if key in _NAMED_SCHEMAS and isinstance(value, Mapping):
                    for name, sub in value.items():
                        if not self._budget(level + 1):
                            break
                        yield _Text(_pointer(here, name), "key", str(name))
                        stack.append((sub, _pointer(here, name), level + 2))
                elif key in _VALUE_KEYS:
                    yield from self._plain(value, here, level + 1, "value")
                elif key == "required" and isinstance(value, list):
                    yield from (_Text(_pointer(here, i), "key", v) for i, v in enumerate(value) if isinstance(v, str))
                else:
                    if not isinstance(key, str) or key not in _SCHEMA_KEYWORDS:
                        yield _Text(here, "key", str(key))
                    if isinstance(value, str):
                        yield _Text(here, "text", value)
                    else:
                        stack.append((value, here, level + 1))

    # -- scanning one string -------------------------------------------------------------------

    def _scan_text(self, text: _Text, *, decoded_from: str = "", depth: int = 0) -> None:
        value = text.value
        self.chars += min(len(value), MAX_STRING_SCANNED)
        if len(value) > MAX_STRING_SCANNED:
            self._add("abnormal-length", "medium", f"a string of {len(value):,} characters: only the first "
                      f"{MAX_STRING_SCANNED:,} were scanned", text.path)  # fmt: skip
            value = value[:MAX_STRING_SCANNED]
        if text.role == "icon" and value.startswith("data:"):
            return
        prefix = f"decoded from {decoded_from}: " if decoded_from else ""
        report = inspect_unicode(value, identifier=text.role in ("name", "key"))
        for finding in report.findings:
            self._add(finding.rule, finding.severity, prefix + finding.message, text.path, finding.excerpt)
        if report.hidden_text and depth < 2:
            self._scan_text(
                _Text(text.path, text.role, report.hidden_text), decoded_from="tag characters", depth=depth + 1
            )
        if depth < 2:
            for run in find_encoded(value):
                self._add("encoded-payload", "medium", f"{prefix}{run.encoding} run that decodes to text: "
                          f"{excerpt(run.text, 0, 100)!r}", text.path, excerpt(value, run.start, run.end))  # fmt: skip
                self._scan_text(_Text(text.path, text.role, run.text), decoded_from=run.encoding, depth=depth + 1)
        if text.role == "icon":
            return
        for hit in find_secrets(value, key=text.path.rsplit("/", 1)[-1]):
            self._add(
                "hardcoded-secret",
                "medium",
                f"{prefix}a credential ({hit.kind}) written into the definition",
                text.path,
                mask(value[hit.start : hit.end]),
            )
        if text.path == "/description":
            self._description_length(value, text.path)
        folded = fold(value)
        if len(folded) < 16 and " " not in folded and text.role != "key":
            return  # a word: no instruction fits in it (names and keys are checked above and below)
        found = signals(folded, own_name=self.name, others=self.other_names)
        padding = language.PADDING.search(value)
        if padding:
            found.add(language.Signal("padding", padding.start(), padding.end(), ""))
        self._weigh(text, folded, found, prefix)

    def _description_length(self, value: str, path: str) -> None:
        if len(value) > VERY_LONG_DESCRIPTION:
            self._add("abnormal-length", "medium", f"a description of {len(value):,} characters", path)
        elif len(value) > LONG_DESCRIPTION:
            self._add("abnormal-length", "low", f"a description of {len(value):,} characters", path)

    def _weigh(self, text: _Text, folded: str, found: Signals, prefix: str) -> None:
        path = text.path

        def add(rule: str, severity: Severity, message: str, *kinds: str) -> None:
            hit = found.first(*kinds) if kinds else None
            shown = excerpt(folded, hit.start - 40, hit.end + 80) if hit else excerpt(folded, 0, 160)
            self._add(rule, severity, prefix + message, path, shown)

        exfil = found.has("exfil-param", "exfil-send", "exfil-url")
        target = found.has("sensitive-path", "context")
        refers = found.has("other-tool", "named-tool", "other-tools")
        steers = found.has("trigger", "modal-action", "tamper", "shadow-claim")
        directed = found.has("directive", "trigger", "modal-action")
        payload = exfil or target or found.has("secret-word", "tamper", "command", "conceal", "override", "coerce")

        if found.has("override"):
            add("hidden-instruction", "high", "tells the model to drop its instructions or take a new role", "override")
        if found.has("chat-token"):
            add("hidden-instruction", "high", "chat-template tokens that forge a system or user turn", "chat-token")
        if found.has("conceal"):
            add("hidden-instruction", "high", "tells the model to keep what it does from the user", "conceal")
        if found.has("deceive"):
            add("hidden-instruction", "high", "tells the model to disguise what it returns", "deceive")
        if found.has("strong-tag"):
            tag = found.first("strong-tag")
            orders = tag is not None and language.ACCESS.search(folded, tag.end, tag.end + 300) is not None
            if directed or payload or refers or orders:
                add("hidden-instruction", "high", "a block marked for the model (<SYSTEM>, <HIDDEN>, [INST] ...) "
                    "with instructions in it", "strong-tag")  # fmt: skip
            else:
                add(
                    "hidden-instruction",
                    "medium",
                    "a block marked for the model (<SYSTEM>, <HIDDEN> ...)",
                    "strong-tag",
                )
        if found.has("weak-tag"):
            if (
                exfil
                or target
                or found.has("tamper", "command", "coerce", "shadow-claim")
                or (directed and found.has("secret-word"))
            ):
                add("hidden-instruction", "high", "an <IMPORTANT> block or comment that steers the model toward "
                    "data or other tools", "weak-tag")  # fmt: skip
            elif directed or "<!--" in folded:
                add(
                    "hidden-instruction",
                    "medium",
                    "an <IMPORTANT> block or HTML comment addressed to the model",
                    "weak-tag",
                )
        if target:
            if self._reaches(folded, found, text):
                add("sensitive-reference", "high", "tells the model to reach private data (keys, credential files, "
                    "cloud metadata, its own prompt or conversation)", "sensitive-path", "context")  # fmt: skip
            else:
                add("sensitive-reference", "medium", "refers to private data (keys, credential files, cloud metadata, "
                    "the model's prompt or conversation)", "sensitive-path", "context")  # fmt: skip
        if found.has("exfil-send", "exfil-url"):
            if target or found.has("secret-word") or directed:
                add(
                    "exfiltration",
                    "high",
                    "sends data to an outside address (URL, e-mail, phone number)",
                    "exfil-send",
                    "exfil-url",
                )
            else:
                add("exfiltration", "medium", "names an outside address data is sent to", "exfil-send", "exfil-url")
        if found.has("exfil-param"):
            if target or (found.has("secret-word") and directed):
                add("exfiltration", "high", "tells the model to put private data into an argument", "exfil-param")
            else:
                add("exfiltration", "low", "tells the model what to put into an argument", "exfil-param")
        if found.has("exfil-output") and directed and found.has("secret-word"):
            add("exfiltration", "high", "tells the model to put secrets into its answer", "exfil-output")
        self._cross_tool(found, folded, add, refers=refers, steers=steers, payload=payload)
        if found.has("command"):
            severity: Severity = "high" if directed else "medium"
            add(
                "command-payload",
                severity,
                "a shell payload (piped download, reverse shell, destructive command)",
                "command",
            )
        if found.has("padding"):
            after = found.first("padding")
            later = after is not None and any(s.start > after.start for k in found.found for s in found.found[k]
                                              if k not in ("padding", "secret-word"))  # fmt: skip
            add(
                "hidden-instruction",
                "high" if later and directed else "medium",
                "a long run of whitespace pushes the rest of the text out of view",
            )
        if found.has("coerce") and directed:
            add("hidden-instruction", "medium", "threatens failure to force the model to comply", "coerce")
        if found.has("authority") and directed:
            add(
                "hidden-instruction",
                "medium",
                "claims an authority (policy, system, security team) to give orders",
                "authority",
            )
        if text.role in ("value", "key"):
            self._schema_poisoning(text, folded, found, add)
        elif found.has("directive") and not self._has_high(path):
            add("hidden-instruction", "low", "addresses the model directly", "directive")

    @staticmethod
    def _reaches(folded: str, found: Signals, text: _Text) -> bool:
        """Whether the text tells the model to get at the private data it names: a directive and an
        access verb in the same instruction as the target, the target passed on (argument, outside
        address, the answer), or a parameter that asks for the model's own prompt or tools."""
        targets = found.found.get("sensitive-path", []) + found.found.get("context", [])
        outs = [s for k in ("exfil-param", "exfil-send", "exfil-url", "exfil-output") for s in found.found.get(k, [])]
        orders = [s for k in ("directive", "trigger", "modal-action") for s in found.found.get(k, [])]
        for target in targets:
            if any(same_clause(folded, target, out, reach=240) for out in outs):
                return True
            for order in orders:
                lo, hi = sorted((order.start, target.end))
                if same_clause(folded, order, target, reach=240) and language.ACCESS.search(folded, lo, hi):
                    return True
        parameter = "/properties/" in text.path and text.path.endswith("/description")
        return parameter and _OWN_PROMPT.search(folded) is not None

    def _cross_tool(self, found: Signals, folded: str, add: Any, *, refers: bool, steers: bool, payload: bool) -> None:
        ref = found.first("other-tool", "named-tool", "other-tools")
        steer = found.first("trigger", "modal-action", "tamper", "shadow-claim")
        close = ref is not None and steer is not None and same_clause(folded, ref, steer, reach=240)
        if (close and (payload or found.has("exfil-output"))) or (
            found.has("shadow-claim") and found.has("exfil-send", "exfil-url", "tamper", "directive")
        ):
            add("tool-shadowing", "high", "instructions that change how another tool is used (its arguments, "
                "recipients, or what is sent with it)",
                "other-tool", "named-tool", "other-tools", "shadow-claim")  # fmt: skip
        elif (
            found.has("trigger")
            and found.has("tamper")
            and any(same_clause(folded, t, m, reach=240) for t in found.found["trigger"] for m in found.found["tamper"])
        ):
            add(
                "tool-shadowing",
                "high",
                "around another operation, tells the model to replace its values",
                "trigger",
                "tamper",
            )
        elif close or found.has("shadow-claim", "preference"):
            add(
                "tool-shadowing",
                "medium",
                "instructions about another tool's use",
                "shadow-claim",
                "preference",
                "other-tool",
                "named-tool",
                "other-tools",
            )
        elif found.has("other-tool"):
            add("tool-shadowing", "low", "mentions another tool by name", "other-tool")

    def _schema_poisoning(self, text: _Text, folded: str, found: Signals, add: Any) -> None:
        kinds = {k for k in found.found if k not in ("secret-word", "other-tools", "named-tool", "padding")}
        where = "a property name" if text.role == "key" else "a value offered to the model (default, enum, example)"
        if len(kinds) >= 2 and "directive" in kinds:
            add("schema-poisoning", "high", f"instructions hidden in {where}", *sorted(kinds))
        elif kinds & {"directive", "strong-tag", "weak-tag", "exfil-param", "trigger", "modal-action"}:
            add("schema-poisoning", "medium", f"wording addressed to the model in {where}", *sorted(kinds))
        if text.role == "key":
            words = " ".join(_IDENTIFIER_WORDS.findall(text.value)).casefold()
            if _SENSITIVE_KEY.search(words):
                sentence = len(words.split()) >= 4
                add("sensitive-reference", "high" if sentence else "medium", "a parameter that asks the model for "
                    "its prompt, conversation, tool list or keys" + (" in words" if sentence else ""))  # fmt: skip
            if _PROSE_KEY.fullmatch(text.value.strip()) and len(text.value) > 24:
                add("schema-poisoning", "medium", "a property name that is a sentence")

    # -- the whole definition ------------------------------------------------------------------

    def _definition_level(self) -> None:
        if self.truncated:
            self._add("abnormal-length", "high", f"the definition exceeds the scanner's bounds (depth {MAX_DEPTH}, "
                      f"{MAX_NODES:,} nodes, {MAX_DEFINITION_CHARS:,} characters): no legitimate definition is that "
                      "large, and the rest was not scanned", "")  # fmt: skip
        if not self.name or self.kind != "tool":
            return
        own = skeleton(self.name)
        for other in self.others:
            if other == self.name:
                self._add("tool-shadowing", "medium", f"another tool is also named {other!r}: the model may call "
                          "either", "/name", other)  # fmt: skip
                break
            if own and skeleton(other) == own:
                deceptive = (
                    fold(self.name).casefold() != self.name.casefold() or fold(other).casefold() != other.casefold()
                )
                self._add(
                    "tool-shadowing",
                    "high" if deceptive else "medium",
                    f"the name {self.name!r} looks like another tool's, {other!r}",
                    "/name",
                    excerpt(self.name),
                )
                break

    def _has_high(self, path: str) -> bool:
        return any(f.path == path and f.severity == "high" for f in self.findings)

    def _add(self, rule: str, severity: Severity, message: str, path: str, shown: str = "") -> None:
        for i, existing in enumerate(self.findings):
            if existing.rule == rule and existing.path == path:
                if SEVERITIES.index(severity) > SEVERITIES.index(existing.severity):
                    self.findings[i] = Finding(rule, severity, message, path, shown)
                return
        self.findings.append(Finding(rule, severity, message, path, shown))


def _ranked(findings: list[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: (-SEVERITIES.index(f.severity), f.path, f.rule)))
