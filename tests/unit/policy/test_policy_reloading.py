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

from bastion.config import load_config
from bastion.policy import PolicyEngine
from bastion.policy.reloading import PolicyReloader

PERMIT = '@id("dev-calls")\npermit (principal in Group::"dev", action == Action::"tools/call", resource);\n'
FORBID_DEPLOY = '@id("no-deploy")\nforbid (principal, action, resource == Tool::"demo/deploy");\n'


class World:
    def __init__(self, tmp_path: Path, *, limits_placed: bool = False) -> None:
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
        self.reloader = PolicyReloader(
            self.path, config, self.engine, None, log=self.log, limits_placed=limits_placed,
            tracks_labels=lambda engine, shadow: False,
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
