"""The MCP conformance suite's server scenarios through Bastion.

Bastion (a real ``bastion serve`` process) stands in front of the conformance
fixture server with a policy that permits everything to the suite's principal
and a token the suite presents on every request. Every scenario that passes
directly against the fixture must pass through Bastion as well, including
``dns-rebinding-protection``, which Bastion itself must enforce (it sends its
own Host to the upstream).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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


def test_every_scenario_that_passes_directly_passes_through_bastion(
    harness: ModuleType, conformance_cli: Path, fixture_server_url: str, bastion_in_front: BastionProcess
) -> None:
    direct = harness.run_server_scenarios(fixture_server_url)
    token = bastion_in_front.mint("conformance-suite", "conformance", "conformance", ttl="1h")
    through = harness.run_server_scenarios(
        bastion_in_front.url("conformance"), headers={"Authorization": f"Bearer {token}"}
    )
    print(harness.format_table(through, markdown=True))
    passed_directly = {name for name, result in direct.items() if result.status == "passed"}
    assert "dns-rebinding-protection" in passed_directly
    regressions = {name: through[name].reason for name in sorted(passed_directly) if through[name].status != "passed"}
    assert not regressions, f"pass directly but fail through Bastion: {regressions}\n{bastion_in_front.log()[-3000:]}"


def test_the_suite_without_a_token_is_refused(
    harness: ModuleType, conformance_cli: Path, bastion_in_front: BastionProcess
) -> None:
    results = harness.run_server_scenarios(bastion_in_front.url("conformance"), ["server-initialize"])
    assert results["server-initialize"].status == "failed"
