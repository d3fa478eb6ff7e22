"""Table-driven policy tests: the engine behind ``bastion policy test FILE...``.

Policies are data with tests beside them (STYLE.md 9, after OPA's ``opa test``). A test
file is YAML::

    policies: [demo.cedar]        # files or directories, relative to this file
    schema: bastion.cedarschema   # optional; default: the built-in schema
    cases:
      - name: alice (engineering) may read dev logs
        principal: {type: User, id: alice, groups: [engineering], email: alice@example.com}
        action: tools/call
        resource: {type: Tool, route: demo, name: read_logs, risk: read, labels: [logs]}
        context: {arguments: {env: dev}}
        expect: allow             # allow | approval_required | deny | error (a deny caused by an evaluation error)
        policies: [engineering-read-tools]   # optional: the deciding @ids, exactly
        obligations: {}                      # optional: the obligations, exactly

``approval_required``: a permit annotated ``@approval(...)`` allows the call once a person
approves it; the same case with ``context: {approved: true}`` (a grant for exactly this
call exists) expects ``allow``. ``expect: allow`` fails for a call that needs approval and
has none, so a test cannot miss that a tool waits for a person. Approvals are given to
``tools/call`` only: for any other action a permit asking for one is a ``deny``, as in the
gateway.

``principal`` keys: ``type`` (User | ServiceAccount), ``id``, ``groups``, ``email``,
``name``, ``idp`` (default: the issuer), ``issuer`` (default ``https://idp.example.test``),
``auth``, ``client_id``. ``resource`` keys: ``type`` (Tool | Resource |
Prompt | Server), ``route``, ``name``, ``owner``, ``classification``; for tools also
``risk``, ``labels``, ``annotations`` and ``trust_annotations``, which say what a route's
configuration (``routes[].tools``, ``trust_annotations``) and the upstream would: the
resource is built by the same ``ToolInventory`` as a real tool's (the configured ``risk``
wins; else the annotations decide when ``trust_annotations: true``; else ``destructive``).

Each case is PASS, FAIL (the decision differs) or ERROR (a malformed case, unknown key,
unloadable policies, or an unexpected evaluation error). A report with no case, a FAIL
or an ERROR is not ``ok``; the CLI exits non-zero then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from rich.console import Console
from rich.text import Text

from bastion.errors import ConfigError
from bastion.policy.engine import PolicyEngine
from bastion.policy.inventory import ToolFacts, ToolInventory
from bastion.policy.model import Decision, ResourceRef
from bastion.principal import Principal

__all__ = ["CaseResult", "PolicyTestReport", "render", "run_policy_tests"]

_FILE_KEYS = frozenset({"policies", "schema", "cases"})
_CASE_KEYS = frozenset(
    {"name", "principal", "action", "resource", "context", "expect", "policies", "obligations"}
)
_PRINCIPAL_KEYS = frozenset({"type", "id", "groups", "email", "name", "idp", "issuer", "auth", "client_id"})
_RESOURCE_KEYS = frozenset(
    {"type", "route", "name", "owner", "classification", "annotations", "risk", "labels", "trust_annotations"}
)
_STYLES = {"PASS": "green", "FAIL": "red", "ERROR": "bold red"}


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's outcome: ``status`` PASS / FAIL / ERROR, ``reason`` says why not PASS."""

    file: Path
    name: str
    status: Literal["PASS", "FAIL", "ERROR"]
    reason: str = ""
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class PolicyTestReport:
    """All case results, in file and case order."""

    results: tuple[CaseResult, ...]

    def count(self, status: str) -> int:
        """How many cases ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        """True when at least one case ran and every case passed."""
        return bool(self.results) and all(r.status == "PASS" for r in self.results)


class _CaseError(Exception):
    """A malformed test file or case."""


def run_policy_tests(paths: Sequence[Path]) -> PolicyTestReport:
    """Run every case of every YAML test file; never raises for a bad file or case."""
    engines: dict[tuple[tuple[Path, ...], Path | None], PolicyEngine | ConfigError] = {}
    results: list[CaseResult] = []
    for path in paths:
        try:
            document = _read_document(path)
            engine = _engine(path, document, engines)
        except (_CaseError, ConfigError) as exc:
            results.append(CaseResult(path, "(file)", "ERROR", str(exc)))
            continue
        for index, case in enumerate(document.get("cases") or []):
            results.append(_run_case(engine, path, index, case))
    return PolicyTestReport(tuple(results))


def render(report: PolicyTestReport, console: Console) -> None:
    """Print one line per case (and its reason when not PASS) and a summary line."""
    for result in report.results:
        line = Text.assemble((f"{result.status:<6}", _STYLES[result.status]), f"{result.file}: {result.name}")
        console.print(line)
        if result.reason:
            console.print(Text("       " + result.reason.replace("\n", "\n       ")))
    if not report.results:
        console.print(Text("no policy test cases ran", style="bold red"))
        return
    passed, failed, errored = (report.count(s) for s in ("PASS", "FAIL", "ERROR"))
    summary = f"{len(report.results)} cases: {passed} passed, {failed} failed, {errored} errors"
    console.print(Text(summary, style="green" if report.ok else "bold red"))


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _CaseError(f"cannot read test file: {exc}") from exc
    if not isinstance(document, dict):
        raise _CaseError("a test file is a mapping with 'policies' and 'cases'")
    _no_unknown_keys(document, _FILE_KEYS, "test file")
    if not isinstance(document.get("cases") or [], list):
        raise _CaseError("'cases' must be a list")
    return document


def _engine(
    path: Path, document: Mapping[str, Any], cache: dict[tuple[tuple[Path, ...], Path | None], Any]
) -> PolicyEngine:
    policies = document.get("policies")
    if isinstance(policies, str):
        policies = [policies]
    if not isinstance(policies, list) or not policies or not all(isinstance(p, str) for p in policies):
        raise _CaseError("'policies' must name at least one policy file or directory")
    schema = document.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise _CaseError("'schema' must be a path")
    key = (tuple(path.parent / p for p in policies), path.parent / schema if schema else None)
    if key not in cache:
        try:
            cache[key] = PolicyEngine.load(list(key[0]), key[1])
        except ConfigError as exc:
            cache[key] = exc
    found = cache[key]
    if isinstance(found, ConfigError):
        raise found
    return found  # type: ignore[no-any-return]


def _run_case(engine: PolicyEngine, path: Path, index: int, case: Any) -> CaseResult:
    name = f"case {index + 1}"
    try:
        if not isinstance(case, dict):
            raise _CaseError("a case is a mapping")
        name = str(case.get("name") or name)
        _no_unknown_keys(case, _CASE_KEYS, "case")
        expect = case.get("expect")
        if expect not in ("allow", "deny", "error", "approval_required"):
            raise _CaseError("'expect' must be allow, approval_required, deny or error")
        context = case.get("context") or {}
        if not isinstance(context, dict):
            raise _CaseError("'context' must be a mapping")
        principal, resource = _principal(case.get("principal")), _resource(case.get("resource"))
        decision = engine.decide(principal, str(case.get("action")), resource, context)
    except (_CaseError, ValueError, TypeError) as exc:
        return CaseResult(path, name, "ERROR", str(exc))
    if decision.errors and expect != "error":
        return CaseResult(path, name, "ERROR", "evaluation error: " + "; ".join(decision.errors), decision)
    got: str = "error" if decision.errors else decision.effect
    if got == "allow" and "approval" in decision.obligations:
        if case.get("action") != "tools/call":
            got = "deny"  # as the gateway does: approvals are given to tool calls only
        elif context.get("approved") is not True:
            got = "approval_required"  # permitted once a person approves (context.approved: true)
    problems = [f"expected {expect}, got {got} ({decision.reason})"] if got != expect else []
    expected_ids = sorted(map(str, case.get("policies") or []))
    if "policies" in case and expected_ids != sorted(decision.policy_ids):
        problems.append(f"expected policies {expected_ids}, got {list(decision.policy_ids)}")
    if "obligations" in case and (case["obligations"] or {}) != dict(decision.obligations):
        problems.append(f"expected obligations {case['obligations']}, got {dict(decision.obligations)}")
    return CaseResult(path, name, "FAIL" if problems else "PASS", "; ".join(problems), decision)


def _principal(spec: Any) -> Principal:
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
        raise _CaseError("'principal' must be a mapping with a string 'id'")
    _no_unknown_keys(spec, _PRINCIPAL_KEYS, "principal")
    kind = spec.get("type", "User")
    if kind not in ("User", "ServiceAccount"):
        raise _CaseError("principal 'type' must be User or ServiceAccount")
    groups = spec.get("groups") or []
    if not isinstance(groups, list):
        raise _CaseError("principal 'groups' must be a list")
    return Principal(
        kind=kind,
        sub=spec["id"],
        issuer=str(spec.get("issuer", "https://idp.example.test")),
        idp=str(spec.get("idp", "")),
        auth_method=str(spec.get("auth", "bastion_jwt")),
        expires_at=0,
        email=spec.get("email"),
        name=spec.get("name"),
        groups=tuple(str(g) for g in groups),
        client_id=spec.get("client_id"),
    )


def _resource(spec: Any) -> ResourceRef:
    if not isinstance(spec, dict) or not isinstance(spec.get("route"), str):
        raise _CaseError("'resource' must be a mapping with a string 'route'")
    _no_unknown_keys(spec, _RESOURCE_KEYS, "resource")
    kind, route, name = spec.get("type", "Tool"), spec["route"], str(spec.get("name", ""))
    extra = {k: spec[k] for k in ("owner", "classification") if k in spec}
    if kind == "Server":
        return ResourceRef.server(route)
    if kind != "Tool":
        return ResourceRef(kind, route, name, extra)
    labels, trust = spec.get("labels") or [], spec.get("trust_annotations", False)
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise _CaseError("resource 'labels' must be a list of strings")
    if not isinstance(trust, bool):
        raise _CaseError("resource 'trust_annotations' must be true or false")
    facts = ToolFacts(spec.get("risk"), spec.get("owner", ""), spec.get("classification", ""), frozenset(labels))
    inventory = ToolInventory(route, trust, {name: facts})
    return inventory.ref({"name": name, "annotations": spec.get("annotations") or {}})


def _no_unknown_keys(mapping: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(map(str, mapping)) - allowed)
    if unknown:
        raise _CaseError(f"unknown {where} key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
