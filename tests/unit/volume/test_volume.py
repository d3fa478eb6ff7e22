"""Result volume (issue 14): what a tool result measures, the rolling percentile baseline of each
(route, tool), the anomaly rule, and the baselines kept across a restart (``bastion.volume``)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from bastion.config.volume import VolumeSettings
from bastion.stores.memory_volume import MemoryVolumeStore
from bastion.stores.sqlite_volume import SQLiteVolumeStore
from bastion.stores.volume import BaselineKey, Sample
from bastion.volume import BaselineKeeper, Measures, Verdict, VolumeBaselines, compact_json, measure

USUAL = Measures(2_000, 10, 10)


def _settings(**overrides: Any) -> VolumeSettings:
    return VolumeSettings(**overrides)


def _learnt(baselines: VolumeBaselines, count: int, value: Measures = USUAL, tool: str = "rows") -> None:
    for _ in range(count):
        baselines.observe("db", tool, value)


# --- measuring -------------------------------------------------------------------------------


def test_a_result_measures_its_compact_json_text_blocks_and_structured_items() -> None:
    result = {
        "content": [
            {"type": "text", "text": "row 1"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"},
            {"type": "text", "text": "row 2"},
            "not a block",
        ],
        "structuredContent": {"rows": [1, 2, 3], "more": [4], "total": 4, "nested": {"deep": [5, 6]}},
        "isError": False,
    }
    measures, encoded = measure(result)
    assert encoded == orjson.dumps(result)
    assert json.loads(encoded) == result
    assert measures == Measures(len(encoded), 2, 4)  # only the top-level arrays of structuredContent


@pytest.mark.parametrize(
    ("result", "blocks", "items"),
    [
        ({}, 0, 0),
        ({"content": "text"}, 0, 0),  # not a list: nothing to count, nothing raised
        ({"content": [{"type": "text"}] * 3, "structuredContent": [1, 2, 3, 4]}, 3, 4),  # an array counts itself
        ({"structuredContent": None}, 0, 0),
        ({"structuredContent": {"a": "text", "b": {"c": []}}}, 0, 0),
    ],
)
def test_measuring_is_total_on_any_json_object(result: dict[str, Any], blocks: int, items: int) -> None:
    measures, encoded = measure(result)
    assert (measures.bytes, measures.blocks, measures.items) == (len(encoded), blocks, items)


@pytest.mark.parametrize(
    ("value", "expected"),
    [({"id": 2**70}, b'{"id":1180591620717411303424}'), ({"text": "\ud800!"}, b'{"text":"\\ud800!"}')],
)
def test_what_orjson_cannot_write_is_still_measured(value: dict[str, Any], expected: bytes) -> None:
    assert compact_json(value) == expected  # the C encoder's compact form (a lone surrogate escaped)
    assert json.loads(expected) == value
    assert measure(value)[0].bytes == len(expected)


# --- the baseline ----------------------------------------------------------------------------


def test_the_baseline_is_the_nearest_rank_percentile_of_the_results_before() -> None:
    baselines = VolumeBaselines(_settings(samples=200, min_samples=20, percentile=95))
    for size in range(1, 21):  # bytes 1..20
        baselines.observe("db", "rows", Measures(size, size % 3, 0))
    verdict = baselines.observe("db", "rows", Measures(5, 0, 0))
    assert verdict.samples == 20
    assert verdict.baseline == Measures(19, 2, 0)  # the ceil(0.95 x 20) = 19th smallest of each measure
    median = VolumeBaselines(_settings(samples=200, min_samples=1, percentile=50))
    for size in (40, 10, 30, 20):
        median.observe("db", "rows", Measures(size, 0, 0))
    assert median.observe("db", "rows", USUAL).baseline == Measures(20, 0, 0)  # the 2nd of 4


def test_the_window_keeps_the_last_samples_in_arrival_order() -> None:
    baselines = VolumeBaselines(_settings(samples=5, min_samples=1, percentile=100))
    for size in range(1, 13):
        baselines.observe("db", "rows", Measures(size, size, size))
    assert baselines.samples("db", "rows") == tuple((n, n, n) for n in range(8, 13))
    assert baselines.observe("db", "rows", USUAL).baseline == Measures(12, 12, 12)
    for _ in range(5):  # the large ones leave the window, the small ones take their place
        baselines.observe("db", "rows", Measures(1, 1, 1))
    assert baselines.observe("db", "rows", USUAL).baseline == Measures(1, 1, 1)
    assert baselines.samples("db", "other") == ()


def test_baselines_are_per_route_and_tool() -> None:
    baselines = VolumeBaselines(_settings(min_samples=3))
    _learnt(baselines, 3)
    assert baselines.observe("db", "rows", USUAL).samples == 3
    assert baselines.observe("db", "other", USUAL).samples == 0
    assert baselines.observe("crm", "rows", USUAL).samples == 0


# --- the anomaly rule ------------------------------------------------------------------------


def test_nothing_is_flagged_before_min_samples() -> None:
    baselines = VolumeBaselines(_settings(min_samples=20))
    _learnt(baselines, 19)
    huge = Measures(10**9, 10**6, 10**6)
    early = baselines.observe("db", "rows", huge)
    assert (early.baseline, early.anomalous, early.samples) == (None, False, 19)
    _learnt(baselines, 5)
    assert baselines.observe("db", "rows", huge).exceeded == ("bytes", "blocks", "items")


@pytest.mark.parametrize(
    ("usual", "value", "exceeded"),
    [
        (Measures(10_000, 100, 200), Measures(100_000, 1_000, 2_000), ()),  # exactly factor x: not over
        (Measures(10_000, 100, 200), Measures(100_001, 1_001, 2_001), ("bytes", "blocks", "items")),
        (Measures(10_000, 100, 200), Measures(100_001, 1, 1), ("bytes",)),  # any one measure is enough
        (Measures(100, 1, 0), Measures(65_536, 50, 100), ()),  # 655 times the usual, but at the floors
        (Measures(100, 1, 0), Measures(65_537, 51, 101), ("bytes", "blocks", "items")),
        (Measures(0, 0, 0), Measures(0, 0, 101), ("items",)),  # a baseline of 0: the floor decides
    ],
)
def test_a_result_is_anomalous_over_the_larger_of_its_floor_and_factor_times_the_baseline(
    usual: Measures, value: Measures, exceeded: tuple[str, ...]
) -> None:
    baselines = VolumeBaselines(_settings(min_samples=20, factor=10))
    _learnt(baselines, 20, usual)
    verdict = baselines.observe("db", "rows", value)
    assert verdict.baseline == usual
    assert verdict.exceeded == exceeded
    assert verdict.anomalous == bool(exceeded)


def test_the_worst_measure_names_how_many_times_the_usual_it_is() -> None:
    verdict = Verdict(Measures(200_000, 1_000, 0), Measures(2_000, 100, 0), 20, ("bytes", "blocks"))
    assert verdict.worst() == ("bytes", 100.0)
    assert Verdict(Measures(10, 0, 500), Measures(10, 0, 0), 20, ("items",)).worst() == ("items", float("inf"))
    with pytest.raises(ValueError, match="not an anomalous"):
        Verdict(USUAL, USUAL, 20).worst()


def test_one_outlier_does_not_move_the_baseline_and_a_lasting_shift_becomes_the_new_normal() -> None:
    baselines = VolumeBaselines(_settings(samples=200, min_samples=20, percentile=95))
    _learnt(baselines, 200)
    big = Measures(200_000, 1_000, 1_000)
    assert baselines.observe("db", "rows", big).anomalous  # learnt too ...
    assert baselines.observe("db", "rows", USUAL).baseline == USUAL  # ... but the 95th percentile holds
    flagged = [baselines.observe("db", "rows", big).anomalous for _ in range(20)]
    # 200 x 0.95 = the 190th smallest: 11 large results in the window make it large
    assert flagged == [True] * 10 + [False] * 10


def test_a_result_not_learnt_is_checked_but_does_not_count() -> None:
    baselines = VolumeBaselines(_settings(min_samples=5))
    _learnt(baselines, 5)
    big = Measures(10**7, 0, 0)
    assert baselines.observe("db", "rows", big, learn=False).anomalous
    assert len(baselines.samples("db", "rows")) == 5
    assert baselines.take_changed().keys() == {("db", "rows")}  # from the five learnt
    baselines.observe("db", "new", USUAL, learn=False)
    assert baselines.samples("db", "new") == ()
    assert baselines.take_changed() == {}


def test_past_max_baselines_new_tools_are_not_learnt(caplog: pytest.LogCaptureFixture) -> None:
    baselines = VolumeBaselines(_settings(min_samples=1, max_baselines=2))
    _learnt(baselines, 2, tool="a")
    _learnt(baselines, 2, tool="b")
    with caplog.at_level(logging.WARNING, logger="bastion.volume.baseline"):
        verdict = baselines.observe("db", "c", Measures(10**9, 0, 0))
    assert (verdict.samples, verdict.anomalous, len(baselines)) == (0, False, 2)
    assert "volume.max_baselines (2) reached" in caplog.text
    assert baselines.observe("db", "a", USUAL).samples == 2  # the tools already tracked still learn


def test_a_measure_past_32_bits_counts_as_the_largest_value() -> None:
    baselines = VolumeBaselines(_settings(min_samples=1))
    baselines.observe("db", "rows", Measures(2**40, 0, 0))
    assert baselines.samples("db", "rows") == ((2**32 - 1, 0, 0),)


# --- the settings ----------------------------------------------------------------------------


def test_the_settings_default_to_the_issue_and_refuse_a_minimum_above_the_window() -> None:
    settings = VolumeSettings()
    assert (settings.samples, settings.percentile, settings.min_samples, settings.factor) == (200, 95, 20, 10)
    assert settings.floors == (65_536, 50, 100)
    with pytest.raises(ValueError, match="min_samples"):
        VolumeSettings(samples=10, min_samples=11)
    for bad in ({"percentile": 0}, {"factor": 0.5}, {"floor_bytes": -1}, {"samples": 0}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            VolumeSettings(**bad)


# --- persistence -----------------------------------------------------------------------------


async def test_the_baselines_survive_a_restart_on_the_sqlite_file(tmp_path: Path) -> None:
    settings = _settings(min_samples=5)
    first = BaselineKeeper(SQLiteVolumeStore(tmp_path / "bastion.db"), settings)
    await first.start()
    _learnt(first.baselines, 6)
    _learnt(first.baselines, 2, Measures(5, 1, 0), tool="status")
    assert await first.flush() == 2
    assert await first.flush() == 0  # nothing changed since
    first.baselines.observe("db", "rows", Measures(2_100, 10, 10))  # saved by close
    await first.close()

    again = BaselineKeeper(SQLiteVolumeStore(tmp_path / "bastion.db"), settings)
    await again.start()
    try:
        assert again.baselines.samples("db", "rows") == (*((2_000, 10, 10),) * 6, (2_100, 10, 10))
        assert again.baselines.samples("db", "status") == ((5, 1, 0), (5, 1, 0))
        verdict = again.baselines.observe("db", "rows", Measures(200_000, 1_000, 1_000))
        assert verdict.exceeded == ("bytes", "blocks", "items")  # no relearning after the restart
    finally:
        await again.close()


async def test_loading_keeps_the_last_samples_and_skips_unreadable_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "bastion.db"
    async with SQLiteVolumeStore(database) as store:
        await store.save({("db", "rows"): [(n, 0, 0) for n in range(10)]})
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO volume_baselines (route, tool, samples) VALUES (?, ?, ?)",
            [("db", "torn", "[[1,2"), ("db", "negative", "[[1,2,-3]]"), ("db", "bool", "[[true,0,0]]")],
        )
    keeper = BaselineKeeper(SQLiteVolumeStore(database), _settings(samples=4, min_samples=1))
    with caplog.at_level(logging.WARNING, logger="bastion.stores.sqlite_volume"):
        await keeper.start()
    assert keeper.baselines.samples("db", "rows") == tuple((n, 0, 0) for n in range(6, 10))
    assert len(keeper.baselines) == 1
    assert caplog.text.count("not readable") == 3
    await keeper.close()


class FailingStore(MemoryVolumeStore):
    """Saving fails while ``broken``."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    async def save(self, baselines: Mapping[BaselineKey, Sequence[Sample]]) -> None:
        if self.broken:
            raise OSError("disk full")
        await super().save(baselines)


async def test_baselines_that_could_not_be_saved_are_saved_by_the_next_flush() -> None:
    store = FailingStore()
    keeper = BaselineKeeper(store, _settings(min_samples=1))
    await keeper.start()
    _learnt(keeper.baselines, 3)
    with pytest.raises(OSError, match="disk full"):
        await keeper.flush()
    keeper.baselines.observe("db", "rows", Measures(1, 1, 1))
    store.broken = False
    assert await keeper.flush() == 1
    assert (await store.load())[("db", "rows")] == (*((2_000, 10, 10),) * 3, (1, 1, 1))


def test_where_anomalies_are_withheld_repeating_one_never_makes_it_usual() -> None:
    baselines = VolumeBaselines(_settings(samples=200, min_samples=20, percentile=95))
    _learnt(baselines, 200)
    big = Measures(200_000, 1_000, 1_000)
    flagged = [baselines.observe("db", "rows", big, learn_anomalous=False).anomalous for _ in range(30)]
    assert flagged == [True] * 30
    assert big not in baselines.samples("db", "rows")
    baselines.observe("db", "rows", Measures(7, 7, 7), learn_anomalous=False)  # a usual one is still learnt
    assert baselines.samples("db", "rows")[-1] == Measures(7, 7, 7)
