"""Which server scenarios a conformance run runs: parsed from the CLI's ``list`` command.

* ``list --server``: every server scenario a line knows (active and pending), each with the spec
  versions it applies to (``extension`` for extensions).
* ``list --requirements REVISION`` (0.2.0 only): the scenarios that spec revision requires, frozen
  at its release (``RequirementSet.scored``), plus the ones the set runs but never scores
  (``RequirementSet.not_scored``: extensions, pending).

The output is plain text meant for people, parsed here with regular expressions; each command's
output is cached per CLI path and arguments. No MCP SDK here.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

from harness_suite import DEFAULT_LINE, cli_env, conformance_bin, suite_line

LIST_LINE = re.compile(r"^\s+-\s+(?P<name>\S+)(?:\s+\[(?P<versions>[^\]]*)\])?\s*$")
"""One scenario of ``list`` output: ``  - name`` or ``  - name [versions or leg]``."""
_NOT_SCORED_GROUP = re.compile(r"^\s+(?P<reason>\S+) \(\d+\):\s*$")


@dataclass(frozen=True)
class RequirementSet:
    """The server scenarios a requirement set runs (``conformance list --requirements REV``)."""

    revision: str
    scored: list[str]
    """Scenarios the revision requires (they decide the CLI's exit status), in run order."""
    not_scored: dict[str, str]
    """Scenarios run and reported but never scored -> why (``extension``, ``pending``, ...)."""

    @property
    def scenarios(self) -> list[str]:
        """Everything the run runs, in its order: the scored ones, then the others."""
        return [*self.scored, *self.not_scored]


@functools.lru_cache(maxsize=16)
def _list_output(binary: str, args: tuple[str, ...]) -> str:
    proc = subprocess.run(
        [binary, "list", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env("http://x", None),
    )
    return proc.stdout


def list_server_scenarios_with_versions(line: str = DEFAULT_LINE) -> dict[str, list[str]]:
    """Server scenario name -> spec versions it applies to (``extension`` for extensions), in the CLI's order."""
    stdout = _list_output(str(conformance_bin(line)), ("--server",))
    scenarios: dict[str, list[str]] = {}
    for text in stdout.splitlines():
        m = LIST_LINE.match(text)
        if m:
            versions = m.group("versions")
            scenarios[m.group("name")] = versions.split(",") if versions else []
    if not scenarios:
        raise RuntimeError(f"could not parse `conformance list --server` output:\n{stdout}")
    return scenarios


def requirement_set(revision: str, line: str = "0.2.0") -> RequirementSet:
    """Parse ``conformance list --requirements REVISION``'s server part.

    The output has a ``Server scenarios ...:`` section (``  - name``), a client section, and
    ``Run and reported, but never scored:`` with groups ``  reason (n):`` of ``    - name [leg]``.
    """
    if not suite_line(line).requirement_sets:
        raise ValueError(f"suite line {line} has no requirement sets (use line='0.2.0')")
    stdout = _list_output(str(conformance_bin(line)), ("--requirements", revision))
    scored: list[str] = []
    not_scored: dict[str, str] = {}
    section = reason = ""
    for text in stdout.splitlines():
        if not text.strip():
            continue
        if not text.startswith(" "):
            section = text
            continue
        m = LIST_LINE.match(text)
        if m is None:
            group = _NOT_SCORED_GROUP.match(text)
            reason = group.group("reason") if group else reason
        elif section.startswith("Server scenarios"):
            scored.append(m.group("name"))
        elif section.startswith("Run and reported") and m.group("versions") == "server":
            not_scored[m.group("name")] = reason
    if not scored:
        raise RuntimeError(f"could not parse `conformance list --requirements {revision}` output:\n{stdout}")
    return RequirementSet(revision, scored, not_scored)


def list_server_scenarios(line: str = DEFAULT_LINE, requirements: str | None = None) -> list[str]:
    """The server scenarios a run would run: all the line knows (active and pending), or,
    with ``requirements``, those the requirement set runs (scored and not scored)."""
    if requirements is not None:
        return requirement_set(requirements, line).scenarios
    return list(list_server_scenarios_with_versions(line))
