"""What ``make bench`` measures, shared by its modules: the targets and the order they are measured
in, the concurrencies, the route and group of the benchmark principal, and the Cedar policy set
every Bastion loads."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
BIN = Path(sys.executable).parent
"""The scripts directory of this Python (its venv): ``bastion`` and ``py-spy``."""
CONCURRENCIES = (1, 16, 64)
ROUTE = "echo"
GROUP = "bench"
DEFAULT = "bastion"
NORMAL = "bastion-normal"
BASELINE = "baseline"
TARGETS = ("direct", DEFAULT, NORMAL, BASELINE)
"""Measured in this order in every round: the upstream alone, Bastion as configured by default
(``audit.synchronous: full``), the same Bastion with ``audit.synchronous: normal`` and, with
``--baseline REF`` only, the Bastion of commit REF in the default configuration."""
COMPARED = ("direct", DEFAULT, NORMAL)
"""The columns of the main results table; the baseline is compared in a table of its own."""
SYNCHRONOUS = {DEFAULT: "full", NORMAL: "normal"}
PROFILED = (1, 16)
"""Concurrencies at which Bastion is profiled: latency-bound and throughput-bound."""

POLICIES = """\
// The benchmark's policy set: realistic, not minimal. The benchmark principal is in
// Group::"bench"; its call is permitted by bench-echo and checked against both forbids.

@id("bench-echo")
permit (principal in Group::"bench", action == Action::"tools/call", resource == Tool::"echo/echo");

@id("engineering-all-tools")
permit (principal in Group::"engineering", action == Action::"tools/call", resource in Server::"echo");

// Nobody runs a destructive tool, whoever else permits it.
@id("no-destructive")
forbid (principal, action == Action::"tools/call", resource)
when { resource.risk == "destructive" };

// An argument-level rule: no secrets through echo.
@id("echo-no-secrets")
forbid (principal, action == Action::"tools/call", resource == Tool::"echo/echo")
when { context.arguments has message && context.arguments.message like "*password*" };
"""
