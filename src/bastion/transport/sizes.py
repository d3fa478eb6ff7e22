"""Measuring a call's ``arguments`` against ``server.argument_limits`` (sans-IO).

Run by the transport stage right after the body is parsed, before anything else looks at
the arguments (policy conversion, digest, redaction, the audit record): one iterative walk
(an explicit stack, so 10,000 levels of nesting cost no recursion) that stops at the first
limit exceeded. Its work is bounded by the limits themselves: the members of an object and
the elements of an array are counted with ``len`` before they are visited, and the walk
visits at most ``max_nodes`` values. See ``bastion.config.limits`` for what each limit counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.config.limits import ArgumentLimits
from bastion.errors import ArgumentsTooLarge

__all__ = ["ArgumentSizes", "check_arguments", "measure_arguments"]

_WHAT = {
    "max_depth": "arrays and objects nest {found} deep",
    "max_members": "an object has {found} members",
    "max_elements": "an array has {found} elements",
    "max_string_chars": "a string has {found} characters",
    "max_nodes": "they hold more than {found} values",
}


@dataclass(frozen=True, slots=True)
class ArgumentSizes:
    """What ``measure_arguments`` found: the deepest nesting, the largest object (members) and
    array (elements), the longest string or key (characters), and the values counted (``nodes``).

    When a limit was exceeded, ``exceeded`` names it (``"max_members"`` ...) and the walk
    stopped there, so the other figures cover only what was visited before.
    """

    depth: int
    members: int
    elements: int
    string_chars: int
    nodes: int
    exceeded: str | None = None
    limit: int | None = None

    def as_record(self) -> dict[str, Any]:
        """The figures as the audit record keeps them (``decision.argument_sizes``)."""
        return {
            "depth": self.depth,
            "members": self.members,
            "elements": self.elements,
            "string_chars": self.string_chars,
            "nodes": self.nodes,
            "exceeded": self.exceeded,
            "limit": self.limit,
        }


def measure_arguments(value: Any, limits: ArgumentLimits) -> ArgumentSizes:
    """Measure the JSON value ``value`` (as ``json.loads`` returns it), stopping at the first limit
    exceeded; never raises for a JSON value. Depth counts containers: ``{}`` is 1, a scalar 0.
    """
    depth = members = elements = chars = 0
    nodes = 1
    exceeded: str | None = None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack and exceeded is None:
        node, level = stack.pop()
        kind = type(node)
        if kind is str:  # only the top-level value: nested strings are measured by their container
            chars = len(node)
        elif kind is dict or kind is list:
            depth = max(depth, level)
            size = len(node)
            if kind is dict:
                members = max(members, size)
            else:
                elements = max(elements, size)
            nodes += size
            exceeded = _over(limits, depth, members, elements, 0, nodes)
            if exceeded is None:
                chars = max(chars, _visit(node, level, stack))
        if exceeded is None:
            exceeded = _over(limits, 0, 0, 0, chars, 0)
    limit = None if exceeded is None else int(getattr(limits, exceeded))
    return ArgumentSizes(depth, members, elements, chars, nodes, exceeded, limit)


def _over(limits: ArgumentLimits, depth: int, members: int, elements: int, chars: int, nodes: int) -> str | None:
    """The first limit the figures exceed, if any."""
    for name, found in (
        ("max_depth", depth),
        ("max_members", members),
        ("max_elements", elements),
        ("max_string_chars", chars),
        ("max_nodes", nodes),
    ):
        if found > getattr(limits, name):
            return name
    return None


def _visit(node: dict[str, Any] | list[Any], level: int, stack: list[tuple[Any, int]]) -> int:
    """Push the containers among ``node``'s values onto ``stack``; return its longest string or key."""
    longest = 0
    items = node.values() if type(node) is dict else node
    if type(node) is dict:
        longest = max(map(len, node), default=0)
    for item in items:
        if type(item) is str:
            longest = max(longest, len(item))
        elif type(item) is dict or type(item) is list:
            stack.append((item, level + 1))
    return longest


def check_arguments(value: Any, limits: ArgumentLimits) -> ArgumentSizes:
    """``measure_arguments``, raising ``ArgumentsTooLarge`` (400, JSON-RPC -32602) over a limit.

    The message names the limit (``server.argument_limits.max_members``), what was found and
    the limit; the error's ``sizes`` is ``ArgumentSizes.as_record()`` for the audit record.
    """
    sizes = measure_arguments(value, limits)
    if sizes.exceeded is None:
        return sizes
    found = {
        "max_depth": sizes.depth,
        "max_members": sizes.members,
        "max_elements": sizes.elements,
        "max_string_chars": sizes.string_chars,
        "max_nodes": sizes.limit,
    }[sizes.exceeded]
    what = _WHAT[sizes.exceeded].format(found=found)
    raise ArgumentsTooLarge(
        f"Invalid params: the arguments exceed server.argument_limits.{sizes.exceeded} ({what}; the limit is "
        f"{sizes.limit})",
        sizes=sizes.as_record(),
    )
