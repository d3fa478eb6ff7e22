"""The route's tool catalog: a stale catalog answers no tool, so a changed tool is reloaded before it is judged."""

from __future__ import annotations

import pytest

from bastion.catalog import ToolCatalog
from bastion.errors import UpstreamError
from bastion.policy import ToolFacts, ToolInventory

READ_ONLY = {"name": "wipe", "annotations": {"readOnlyHint": True}}
DESTRUCTIVE = {"name": "wipe", "annotations": {"destructiveHint": True}}


async def test_list_changed_makes_the_next_lookup_reload_the_new_definition() -> None:
    catalog = ToolCatalog()
    catalog.use(ToolInventory("r", trust_annotations=True))
    assert catalog.ref("r", "wipe") is None  # never listed: stale from the start
    catalog.merge([READ_ONLY], complete=True)
    ref = catalog.ref("r", "wipe")
    assert ref is not None
    assert ref.attrs["risk"] == "read"
    catalog.stale = True  # what notifications/tools/list_changed does
    assert catalog.ref("r", "wipe") is None  # the old, harmless-looking definition is not used

    async def fetch(cursor: str | None) -> dict[str, object]:
        return {"tools": [DESTRUCTIVE]}

    assert await catalog.reload(fetch)
    ref = catalog.ref("r", "wipe")
    assert ref is not None
    assert ref.attrs["risk"] == "destructive"


async def test_a_failed_reload_keeps_the_catalog_stale() -> None:
    catalog = ToolCatalog()
    catalog.merge([READ_ONLY], complete=True)
    catalog.stale = True

    async def broken(cursor: str | None) -> dict[str, object]:
        raise UpstreamError("down")

    assert not await catalog.reload(broken)
    assert catalog.ref("r", "wipe") is None  # the caller classifies the tool as unlisted (most restrictive)


@pytest.mark.parametrize("pages", [1, 3])
async def test_reload_reads_every_page(pages: int) -> None:
    catalog = ToolCatalog()

    async def fetch(cursor: str | None) -> dict[str, object]:
        index = int(cursor or 0)
        page: dict[str, object] = {"tools": [{"name": f"t{index}"}]}
        if index + 1 < pages:
            page["nextCursor"] = str(index + 1)
        return page

    assert await catalog.reload(fetch)
    assert sorted(catalog.tools) == [f"t{i}" for i in range(pages)]


def test_the_catalog_knows_which_tools_promote_arguments_to_headers() -> None:
    catalog = ToolCatalog()
    promoted = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}
    plain = {"type": "object", "properties": {"region": {"type": "string"}}}
    catalog.merge([{"name": "routed", "inputSchema": promoted}, {"name": "plain", "inputSchema": plain}], complete=True)
    assert [catalog.promotes_headers(n) for n in ("routed", "plain", "unlisted")] == [True, False, False]
    catalog.merge([{"name": "plain", "inputSchema": promoted}])  # a new definition is looked at again
    assert catalog.promotes_headers("plain")


def test_refs_are_built_by_the_inventory_in_use() -> None:
    catalog = ToolCatalog()
    catalog.merge([READ_ONLY], complete=True)
    before = catalog.ref("r", "wipe")
    assert before is not None
    assert before.attrs["risk"] == "destructive"  # no inventory yet: nothing trusted, nothing configured
    catalog.use(ToolInventory("r", tools={"wipe": ToolFacts(risk="write", owner="ops", labels=frozenset({"pii"}))}))
    after = catalog.ref("r", "wipe")
    assert after is not None
    assert (after.attrs["risk"], after.attrs["owner"], after.attrs["labels"]) == ("write", "ops", ("pii",))
    same = ToolInventory("r", trust_annotations=True)
    catalog.use(same)
    assert catalog.ref("r", "wipe") is not after  # the cached ref of the old inventory is dropped
    cached = catalog.ref("r", "wipe")
    catalog.use(same)
    assert catalog.ref("r", "wipe") is cached  # the same inventory again keeps the cache
