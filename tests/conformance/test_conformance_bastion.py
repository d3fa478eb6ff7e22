"""The MCP conformance suite's server scenarios through Bastion.

Bastion (a real ``bastion serve`` process) stands in front of the conformance
fixture server with a policy that permits everything to the suite's principal
and a token the suite presents on every request. For each run in
``harness.SUITE_RUNS`` (0.1.16 ``--suite all``, 0.2.0 ``--suite all``, 0.2.0
``--requirements 2026-07-28``), every scenario that passes directly against the
fixture must pass through Bastion as well, including ``dns-rebinding-protection``,
which Bastion itself must enforce (it sends its own Host to the upstream). The
direct run is the session's ``direct_results`` (made once per run, shared with
test_conformance_direct.py); the test prints both side by side
(``harness.format_comparison``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.support.bastion_process import BastionProcess

pytestmark = pytest.mark.conformance

PERMIT_ALL = """
@id("conformance-suite-may-do-anything")
permit (principal in Group::"conformance", action, resource);
"""


@pytest.fixture(scope="module")
def bastion_in_front(fixture_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("bastion-conformance")
    (workdir / "policy.cedar").write_text(PERMIT_ALL, encoding="utf-8")
    config = {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "routes": [
            {"name": "conformance", "http": {"url": fixture_server_url, "allow_http": True, "allow": ["127.0.0.1"]}}
        ],
    }
    with BastionProcess(workdir, config) as bastion:
        yield bastion


@pytest.fixture(scope="module")
def suite_token(bastion_in_front: BastionProcess) -> str:
    return bastion_in_front.mint("conformance-suite", "conformance", "conformance", ttl="1h")


def test_every_scenario_that_passes_directly_passes_through_bastion(
    harness: ModuleType,
    suite_run: Any,
    direct_results: dict[str, Any],
    bastion_in_front: BastionProcess,
    suite_token: str,
) -> None:
    through = harness.run_server_scenarios(
        bastion_in_front.url("conformance"),
        line=suite_run.line,
        requirements=suite_run.requirements,
        headers={"Authorization": f"Bearer {suite_token}"},
    )
    print(f"\n### {suite_run.label}\n\n{harness.format_comparison(direct_results, through)}\n")
    print(f"through Bastion, in detail:\n{harness.format_table(through)}")
    assert list(through) == list(direct_results)
    passed_directly = {name for name, result in direct_results.items() if result.status == "passed"}
    assert "dns-rebinding-protection" in passed_directly
    regressions = {name: through[name].reason for name in sorted(passed_directly) if through[name].status != "passed"}
    assert not regressions, (
        f"{suite_run.label}: pass directly but fail through Bastion: {regressions}\n{bastion_in_front.log()[-3000:]}"
    )


@pytest.mark.parametrize(("line", "scenario"), [("0.1.16", "server-initialize"), ("0.2.0", "server-stateless")])
def test_the_suite_without_a_token_is_refused(
    harness: ModuleType, conformance_cli: Path, bastion_in_front: BastionProcess, line: str, scenario: str
) -> None:
    results = harness.run_server_scenarios(bastion_in_front.url("conformance"), [scenario], line=line)
    assert results[scenario].status == "failed"
    assert "no bearer token" in (results[scenario].reason or "")
