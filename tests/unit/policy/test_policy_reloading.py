"""``PolicyReloader``: a policy change confined to the ``policy`` section is validated, recorded and then in force
in the same engine object every stage holds; anything else (a broken policy, a change outside ``policy``, a set
needing a stage the gateway did not place, an audit log that cannot take the record) leaves the running set and
is recorded as refused when the log can take it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from policy_helpers import tool, user
from tests.support.audit_fakes import RecordingAuditLog
from tests.support.route_fakes import RecordingHost

from bastion.config import load_config
from bastion.policy import PolicyEngine, ResourceRef
from bastion.policy.reloading import PolicyReloader, RouteDiff
from bastion.transport.route_swap import RouteSwap

PERMIT = '@id("dev-calls")\npermit (principal in Group::"dev", action == Action::"tools/call", resource);\n'
FORBID_DEPLOY = '@id("no-deploy")\nforbid (principal, action, resource == Tool::"demo/deploy");\n'


class World:
    def __init__(self, tmp_path: Path, *, limits_placed: bool = False, routes: bool = False) -> None:
        self.policy = tmp_path / "policy.cedar"
        self.policy.write_text(PERMIT, encoding="utf-8")
        self.path = tmp_path / "bastion.yaml"
        self.settings: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "policy": {"files": ["policy.cedar"]},
            "routes": [{"name": "demo", "stdio": {"command": "true"}}],
        }
        self.write()
        config = load_config(self.path)
        self.engine = PolicyEngine.load(config.policy.files)
        self.log = RecordingAuditLog()
        self.host = RecordingHost(config)
        self.reloader = PolicyReloader(
            self.path, config, self.engine, None, log=self.log, limits_placed=limits_placed,
            tracks_labels=lambda engine, shadow, routes: False,
            routes=RouteSwap(self.host, drain_s=1) if routes else None,
        )  # fmt: skip

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.settings), encoding="utf-8")

    def allowed(self, name: str) -> bool:
        return self.engine.decide(user("dev"), "tools/call", tool(name), {"arguments": {}}).allowed

    def records(self) -> list[dict[str, Any]]:
        return [body for body in self.log.bodies if body["method"] == "policy/reload"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_a_changed_policy_is_recorded_then_in_force_in_the_same_engine(world: World) -> None:
    before = world.engine.version
    assert world.allowed("deploy")
    world.policy.write_text(PERMIT + FORBID_DEPLOY, encoding="utf-8")
    result = await world.reloader.reload("sighup")
    assert (result.applied, result.previous, result.changed) == (True, before, True)
    assert world.engine.version == result.version != before
    assert not world.allowed("deploy")
    assert world.allowed("read")
    [record] = world.records()
    assert record["decision"]["effect"] == "allow"
    assert record["decision"]["policy_version"] == result.version
    assert record["arguments"] == {"trigger": "sighup", "previous_version": before}


async def test_a_policy_that_does_not_validate_leaves_the_running_set_and_is_recorded(world: World) -> None:
    before = world.engine.version
    world.policy.write_text(PERMIT + "forbid (principal, action, resource) when { resource.nope == 1 ", "utf-8")
    result = await world.reloader.reload("file change")
    assert (result.applied, result.version) == (False, before)
    assert result.error is not None
    assert "policy.cedar" in result.error
    assert world.engine.version == before
    assert world.allowed("deploy")
    [record] = world.records()
    assert (record["decision"]["effect"], record["decision"]["reason"]) == ("deny", "reload_refused")
    assert record["decision"]["policy_version"] == before
    assert record["arguments"]["error"] == result.error


async def test_a_change_outside_the_policy_section_is_refused_as_needing_a_restart(world: World) -> None:
    world.settings["routes"].append({"name": "more", "stdio": {"command": "true"}})
    world.policy.write_text(PERMIT + FORBID_DEPLOY, encoding="utf-8")
    world.write()
    result = await world.reloader.reload("sighup")
    assert not result.applied
    assert result.error == "only the policy section reloads; restart to apply the change to routes"
    assert world.allowed("deploy")


async def test_rate_obligations_without_a_limits_stage_are_refused(world: World) -> None:
    world.policy.write_text('@id("dev-calls")\n@rate("5/minute")\n' + PERMIT.split("\n", 1)[1], encoding="utf-8")
    result = await world.reloader.reload("sighup")
    assert not result.applied
    assert "dev-calls carry @rate or @quota" in (result.error or "")


async def test_rate_obligations_with_a_limits_stage_are_applied(tmp_path: Path) -> None:
    world = World(tmp_path, limits_placed=True)
    world.policy.write_text('@id("dev-calls")\n@rate("5/minute")\n' + PERMIT.split("\n", 1)[1], encoding="utf-8")
    result = await world.reloader.reload("sighup")
    assert result.applied
    assert world.engine.limited_policy_ids == frozenset({"dev-calls"})


async def test_no_record_no_change(world: World) -> None:
    class Refusing(RecordingAuditLog):
        async def append(self, body: dict[str, Any]) -> None:
            raise OSError("disk full")

    world.reloader._log = Refusing()  # type: ignore[assignment]  # the log fails from now on
    before = world.engine.version
    world.policy.write_text(PERMIT + FORBID_DEPLOY, encoding="utf-8")
    result = await world.reloader.reload("sighup")
    assert (result.applied, result.version) == (False, before)
    assert "audit record failed" in (result.error or "")
    assert world.allowed("deploy")


async def test_an_unchanged_set_is_neither_applied_nor_recorded(world: World) -> None:
    result = await world.reloader.reload("sighup")
    assert (result.applied, result.changed, result.error) == (False, False, None)
    assert world.records() == []


async def test_the_watched_files_are_the_configuration_and_the_policies(world: World) -> None:
    assert world.reloader.watched_files == (world.path, world.policy.resolve())


# --- the routes (a reloader given the gateway's RouteSwap) --------------------------------------------------

MORE = {"name": "more", "stdio": {"command": "cat"}}


@pytest.fixture
def routed(tmp_path: Path) -> World:
    return World(tmp_path, routes=True)


async def test_routes_and_policies_change_in_one_reload_with_one_record(routed: World) -> None:
    before = routed.engine.version
    routed.settings["routes"].append(MORE)
    routed.policy.write_text(PERMIT + FORBID_DEPLOY.replace("demo/deploy", "more/deploy"), encoding="utf-8")
    routed.write()
    result = await routed.reloader.reload("sighup")
    assert (result.applied, result.routes) == (True, RouteDiff(added=("more",)))
    assert result.version != before
    assert routed.host.names() == ["demo", "more"]
    assert [r.name for r in routed.reloader.running.routes] == ["demo", "more"]
    more = ResourceRef.from_tool("more", {"name": "deploy"}, trust_annotations=False)
    assert not routed.engine.decide(user("dev"), "tools/call", more, {"arguments": {}}).allowed  # the new route's
    assert routed.allowed("deploy")
    [record] = routed.records()
    assert record["decision"]["policy_version"] == result.version
    assert record["arguments"] == {
        "trigger": "sighup", "previous_version": before,
        "routes": {"added": ["more"], "removed": [], "changed": []},
    }  # fmt: skip


async def test_a_route_removed_and_one_changed_alone_is_applied_with_the_same_policy_version(routed: World) -> None:
    routed.settings["routes"] = [{"name": "demo", "stdio": {"command": "cat"}}]
    routed.write()
    result = await routed.reloader.reload("file change")
    assert (result.applied, result.changed, result.routes) == (True, False, RouteDiff(changed=("demo",)))
    [record] = routed.records()
    assert record["arguments"]["routes"] == {"added": [], "removed": [], "changed": ["demo"]}


async def test_a_route_that_does_not_start_refuses_the_whole_reload(routed: World) -> None:
    before = routed.engine.version
    routed.host.fail_start = "stdio upstream 'more' did not become ready: [Errno 2] No such file or directory"
    routed.settings["routes"].append(MORE)
    routed.policy.write_text(PERMIT + FORBID_DEPLOY, encoding="utf-8")
    routed.write()
    result = await routed.reloader.reload("sighup")
    assert (result.applied, result.version, result.error) == (False, before, routed.host.fail_start)
    assert routed.allowed("deploy")  # the policy change is refused with the routes
    assert routed.host.names() == ["demo"]
    assert routed.host.steps[-1] == ("stopped", ["more"])
    [record] = routed.records()
    assert (record["decision"]["effect"], record["decision"]["reason"]) == ("deny", "reload_refused")
    assert record["arguments"]["error"] == result.error


async def test_a_section_other_than_policy_and_routes_is_refused_naming_it(routed: World) -> None:
    routed.settings["routes"].append(MORE)
    routed.settings["server"] = {"drain_s": 3}
    routed.write()
    result = await routed.reloader.reload("sighup")
    assert result.error == "only the policy and routes sections reload; restart to apply the change to server"
    assert routed.host.names() == ["demo"]
    assert routed.host.steps == []


async def test_no_record_no_routes_change(routed: World) -> None:
    class Refusing(RecordingAuditLog):
        async def append(self, body: dict[str, Any]) -> None:
            raise OSError("disk full")

    routed.reloader._log = Refusing()  # type: ignore[assignment]  # the log fails from now on
    serving = list(routed.host.served)
    routed.settings["routes"] = [MORE]
    routed.write()
    result = await routed.reloader.reload("sighup")
    assert not result.applied
    assert "audit record failed" in (result.error or "")
    assert routed.host.served == serving  # the old route serves again
    assert routed.host.steps[-1] == ("stopped", ["more"])
    assert ("retired", "demo") not in routed.host.steps
