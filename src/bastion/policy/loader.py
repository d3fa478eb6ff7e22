"""Read, check, parse and validate Cedar policy files once, at start.

Every policy must carry a unique, non-empty ``@id("...")``; templates (``?principal``)
are refused because nothing links them; ``Action`` entities named in policies must be
the MCP actions Bastion issues or its own (``approvals/decide``, ``audit/search``; the engine
evaluates without the schema, see ``bastion.policy.engine``, so an action group declared in a
custom schema would silently never match). Validation runs Cedar's strict validator per group of policies that assume
the same ``context.arguments`` type (``bastion.policy.argument_types``). Any failure is a
``ConfigError`` naming the file and carrying Cedar's error text. An ``@approval`` annotation
must say ``"review"`` or ``"confirm"`` and sit on a permit; ``@rate`` / ``@quota`` must be a rate
(``bastion.limits.rates``) and ``@rate_per`` one of ``LIMIT_KEYS``; ``@redact`` must name ``secrets``,
``pii`` or both (``"secrets,pii"``) and sit on a permit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy
from cedarpy import pst
from cedarpy.pst import VarName

from bastion.approvals.model import APPROVAL_KINDS
from bastion.errors import ConfigError
from bastion.limits.rates import LIMIT_KEYS, parse_rate
from bastion.policy.argument_types import infer_arguments_type, render_cedar_type
from bastion.policy.convert import ArgumentPaths
from bastion.policy.model import ADMIN_ACTIONS, POLICY_ACTIONS
from bastion.scan.redact_classes import parse_redact

__all__ = ["LoadedPolicies", "PolicyInfo", "builtin_schema_text", "load_policies"]

_BUILTIN_SCHEMA = "bastion.cedarschema"
_LOCAL_ID = re.compile(r"`(policy\d+)`")


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One loaded policy: its ``@id``, file, effect and obligations (other annotations)."""

    policy_id: str
    file: Path
    effect: str
    obligations: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    """The parsed policies and what the engine needs to slice, evaluate and explain its answers.

    ``by_cedar_id`` maps Cedar's positional ids (``policy0``...) to ``PolicyInfo``;
    ``version`` is the SHA-256 (hex) of the policy texts, in load order, and the schema;
    ``context_keys`` the ``context`` attributes some policy reads (None: any, because a
    policy uses ``context`` as a whole); ``argument_paths`` the paths below
    ``context.arguments`` some policy reads, as a trie (``ArgumentPaths``; None: a policy
    uses ``context.arguments`` or ``context`` as a whole); ``templates`` the parsed policies by
    Cedar id, in load order (``bastion.policy.slicing`` indexes them); ``argument_readers`` the Cedar
    ids of the policies that read ``context.arguments`` (or ``context`` as a whole); ``resource_reads``
    by Cedar id, the attributes of ``resource`` a policy's conditions read (None: they use
    ``resource`` otherwise, e.g. ``resource == ...``, so they may depend on its uid); ``admin_ids``
    those of the policies that may decide Bastion's own actions (``ADMIN_ACTIONS``): every forbid,
    and the permits whose action scope names one (``==`` or ``in [...]``), so that a permit with an
    unconstrained action makes nobody an approver or an auditor.
    """

    by_cedar_id: Mapping[str, PolicyInfo]
    templates: Mapping[str, pst.Template]
    schema_text: str
    version: str
    files: tuple[Path, ...]
    context_keys: frozenset[str] | None
    argument_paths: ArgumentPaths | None
    argument_readers: frozenset[str]
    resource_reads: Mapping[str, frozenset[str] | None]
    admin_ids: frozenset[str]


def builtin_schema_text() -> str:
    """The Cedar schema shipped in this package (``bastion.cedarschema``)."""
    return importlib.resources.files("bastion.policy").joinpath(_BUILTIN_SCHEMA).read_text("utf-8")


def load_policies(policy_paths: Sequence[Path], schema_path: Path | None = None) -> LoadedPolicies:
    """Load ``.cedar`` files (a directory means every ``*.cedar`` directly in it).

    Raises ``ConfigError`` for a missing path, no policy file, unreadable text, a Cedar
    parse error, a policy without ``@id``, a duplicate ``@id``, a template, an unknown
    action, an invalid schema, or a policy the schema does not validate.
    """
    files = _policy_files(policy_paths)
    texts = [_read(path, "policy file") for path in files]
    schema_name = str(schema_path) if schema_path is not None else f"built-in {_BUILTIN_SCHEMA}"
    schema_text = _read(schema_path, "schema") if schema_path is not None else builtin_schema_text()
    files_by_id: dict[str, Path] = {}
    for path, text in zip(files, texts, strict=True):
        for template in _parse(text, path).static_policies.values():
            policy_id = _check_policy(template, path)
            if policy_id in files_by_id:
                raise ConfigError(f"duplicate policy @id({policy_id!r}) in {files_by_id[policy_id]} and {path}")
            files_by_id[policy_id] = path
    try:
        templates = cedarpy.PolicySet.from_str("\n".join(texts)).to_pst().static_policies
    except ValueError as exc:  # pragma: no cover - each file parsed on its own above
        raise ConfigError(f"{', '.join(map(str, files))}: Cedar parse error: {exc}") from exc
    context_reads = {cedar_id: _attributes_read([template], "context") for cedar_id, template in templates.items()}
    by_cedar_id = {
        cedar_id: PolicyInfo(
            policy_id=t.annotations["id"],
            file=files_by_id[t.annotations["id"]],
            effect=t.effect,
            obligations={k: v for k, v in t.annotations.items() if k != "id"},
        )
        for cedar_id, t in templates.items()
    }
    _validate(templates, by_cedar_id, schema_text, schema_name)
    digest = hashlib.sha256()
    for text in (*texts, schema_text):
        digest.update(len(text.encode()).to_bytes(8, "big") + text.encode())
    return LoadedPolicies(
        by_cedar_id=by_cedar_id,
        templates=templates,
        schema_text=schema_text,
        version=digest.hexdigest(),
        files=tuple(files),
        context_keys=_union(context_reads.values()),
        argument_paths=_argument_paths(templates),
        argument_readers=frozenset(k for k, keys in context_reads.items() if keys is None or "arguments" in keys),
        resource_reads={k: _resource_reads(t) for k, t in templates.items()},
        admin_ids=frozenset(k for k, t in templates.items() if t.effect == "forbid" or _names_admin_action(t)),
    )


def _names_admin_action(template: pst.Template) -> bool:
    """Whether a policy's action scope names one of Bastion's own actions explicitly."""
    scope = template.action
    named = (scope.entity,) if isinstance(scope, pst.ActionEq) else getattr(scope, "entities", ())
    return any(uid.id in ADMIN_ACTIONS for uid in named)


def _union(reads: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """The attributes all the policies read together (each policy's from ``_attributes_read``), or
    None when one of them uses the variable whole."""
    found: set[str] = set()
    for read in reads:
        if read is None:
            return None
        found |= read
    return frozenset(found)


def _resource_reads(template: pst.Template) -> frozenset[str] | None:
    """The attributes of ``resource`` a policy's conditions read (``resource.a``, ``resource has a``),
    or None when they use ``resource`` in any other way."""
    return _attributes_read(list(template.clauses), "resource")


def _attributes_read(nodes: list[Any], variable: VarName) -> frozenset[str] | None:
    """The attributes of ``variable`` read under ``nodes`` (``v.a``, ``v has a``), or None when
    ``variable`` is used in any other way (as a whole)."""
    found: set[str] = set()
    stack = nodes
    while stack:
        node = stack.pop()
        if isinstance(node, pst.GetAttr | pst.HasAttr) and node.base == pst.Var(variable):
            found.add(node.attr if isinstance(node, pst.GetAttr) else node.attrs[0])
        elif node == pst.Var(variable):
            return None
        else:
            stack.extend(_children(node))
    return frozenset(found)


def _argument_paths(templates: Mapping[str, pst.Template]) -> ArgumentPaths | None:
    """The paths below ``context.arguments`` the policies read, as an ``ArgumentPaths`` trie, or
    None when one uses ``context.arguments`` (or ``context``) as a whole value.

    A chain ``context.arguments.a.b`` used as a value keeps ``a.b`` whole (everything below it);
    ``context.arguments.a has b`` needs only that ``b`` is there (an empty trie below it, so an
    object there becomes an empty record). Only attribute access and ``has`` reach below
    ``context.arguments``, so any other use of it means "whole".
    """
    root: dict[str, Any] = {}
    stack: list[Any] = list(templates.values())
    while stack:
        node = stack.pop()
        path = _context_path(node) if isinstance(node, pst.GetAttr | pst.HasAttr) else None
        if path is not None:
            if path[0] == "arguments" and len(path) > 1:
                _keep(root, path[1:], whole=isinstance(node, pst.GetAttr))
            elif path == ("arguments",) and isinstance(node, pst.GetAttr):
                return None
            continue  # the chain is handled whole: its bases are not separate reads
        if node == pst.Var("context"):
            return None
        stack.extend(_children(node))
    return root


def _children(node: Any) -> list[Any]:
    """The parts of a policy's syntax tree (``cedarpy.pst``) directly below ``node``."""
    if isinstance(node, Mapping):
        return list(node.values())
    if isinstance(node, tuple):
        return list(node)
    if dataclasses.is_dataclass(node):
        return [getattr(node, f.name) for f in dataclasses.fields(node)]
    return []


def _context_path(node: pst.GetAttr | pst.HasAttr) -> tuple[str, ...] | None:
    """The attributes from ``context`` outward that a ``GetAttr``/``HasAttr`` chain reads (a
    ``has`` adds its attributes last), or None when the chain does not start at ``context``."""
    attrs: list[str] = []
    base: Any = node
    if isinstance(base, pst.HasAttr):
        attrs.extend(reversed(base.attrs))
        base = base.base
    while isinstance(base, pst.GetAttr):
        attrs.append(base.attr)
        base = base.base
    return tuple(reversed(attrs)) if base == pst.Var("context") else None


def _keep(root: dict[str, Any], path: tuple[str, ...], *, whole: bool) -> None:
    """Add ``path`` to the trie ``root``: its last attribute kept ``whole`` (``None``), else only present."""
    node = root
    for attr in path[:-1]:
        child = node.setdefault(attr, {})
        if child is None:
            return  # an ancestor is kept whole already
        node = child
    if whole:
        node[path[-1]] = None
    else:
        node.setdefault(path[-1], {})


def _policy_files(paths: Sequence[Path]) -> list[Path]:
    files: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.cedar") if p.is_file())
        elif path.is_file():
            found = [path]
        else:
            raise ConfigError(f"policy path not found: {path}")
        files.update((p.resolve(), p) for p in found)
    if not files:
        raise ConfigError(f"no .cedar policy files in {', '.join(map(str, paths)) or '(nothing given)'}")
    return list(files.values())


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def _parse(text: str, path: Path) -> pst.PolicySet:
    try:
        parsed = cedarpy.PolicySet.from_str(text).to_pst()
    except ValueError as exc:
        raise ConfigError(f"{path}: Cedar parse error: {exc}") from exc
    if parsed.templates:
        raise ConfigError(f"{path}: policy templates (?principal, ?resource) are not supported")
    return parsed


def _check_policy(template: pst.Template, path: Path) -> str:
    """Return the policy's ``@id``; raise ``ConfigError`` if it lacks one, names a foreign action or
    carries an ``@approval`` that is not ``review``/``confirm`` on a permit."""
    policy_id = template.annotations.get("id", "")
    if not policy_id.strip():
        text = " ".join(str(_single({template.id: template})).split())
        raise ConfigError(f'{path}: every policy needs a non-empty @id("..."); this one has none: {text[:160]}')
    for uid in pst.entity_uids(template):
        if str(uid.type) == "Action" and uid.id not in POLICY_ACTIONS:
            raise ConfigError(
                f"{path}: policy @id({policy_id!r}) names Action::{uid.id!r}; policies may only name "
                f"the actions {', '.join(sorted(POLICY_ACTIONS))} (action groups are not supported)"
            )
    for key in ("rate", "quota"):
        if key in template.annotations:
            try:
                parse_rate(template.annotations[key])
            except ValueError as exc:
                raise ConfigError(f"{path}: policy @id({policy_id!r}): @{key}: {exc}") from None
    per = template.annotations.get("rate_per")
    if per is not None and per not in LIMIT_KEYS:
        choices = ", ".join(LIMIT_KEYS)
        raise ConfigError(f"{path}: policy @id({policy_id!r}): @rate_per({per!r}) must be one of {choices}")
    approval = template.annotations.get("approval")
    if approval is not None and (approval not in APPROVAL_KINDS or template.effect != "permit"):
        raise ConfigError(
            f'{path}: policy @id({policy_id!r}): @approval({approval!r}) must be "review" or "confirm", '
            "on a permit (an approval is asked for a call a permit allows)"
        )
    redact = template.annotations.get("redact")
    if redact is not None:
        try:
            parse_redact(redact)
        except ValueError as exc:
            raise ConfigError(f"{path}: policy @id({policy_id!r}): {exc}") from None
        if template.effect != "permit":
            raise ConfigError(
                f"{path}: policy @id({policy_id!r}): @redact belongs on a permit (it redacts what a call returns)"
            )
    return policy_id


def _single(templates: Mapping[str, pst.Template]) -> cedarpy.PolicySet:
    node = pst.PolicySet(templates={}, static_policies=templates, template_links=())
    return cedarpy.PolicySet.from_pst(node)


def _named(ids: Mapping[str, str], match: re.Match[str]) -> str:
    return f"`{ids.get(match[1], match[1])}`"


def _validate(
    templates: Mapping[str, pst.Template],
    by_cedar_id: Mapping[str, PolicyInfo],
    schema_text: str,
    schema_name: str,
) -> None:
    """Validate each group of policies sharing an inferred ``Arguments`` type against the schema."""
    groups: dict[str, dict[str, pst.Template]] = {"{}": {}}
    for cedar_id, template in templates.items():
        info = by_cedar_id[cedar_id]
        try:
            arguments = render_cedar_type(infer_arguments_type(template))
        except ValueError as exc:
            raise ConfigError(f"{info.file}: policy @id({info.policy_id!r}): {exc}") from exc
        groups.setdefault(arguments, {})[cedar_id] = template
    problems: list[str] = []
    for arguments, group in groups.items():
        try:
            schema = cedarpy.Schema.from_str(f"{schema_text}\ntype Arguments = {arguments};\n")
        except ValueError as exc:
            raise ConfigError(f"{schema_name}: invalid Cedar schema: {exc}") from exc
        if not group:
            continue
        result = cedarpy.validate_policies(str(_single(group)), schema)
        ids = result.id_annotations_by_policy_id
        for error in result.errors:
            policy_id = ids.get(error.policy_id, error.policy_id)
            source = next((i.file for i in by_cedar_id.values() if i.policy_id == policy_id), "")
            text = _LOCAL_ID.sub(functools.partial(_named, ids), error.error)
            hint = f" (context.arguments was typed {arguments})" if "arguments" in text else ""
            problems.append(f"{source}: policy @id({policy_id!r}): {text}{hint}")
    if problems:
        raise ConfigError(f"policies do not validate against {schema_name}:\n" + "\n".join(problems))
