"""Result volume (issue 14): how much each tool usually returns, and the results far above it.

For every ``tools/call`` result the upstream returns to a caller (not an error), the volume
filter (``bastion.pipeline.stages.volume``) takes its ``Measures`` (``measure``: bytes of its
compact JSON, text blocks, items of ``structuredContent``'s top-level arrays) and checks them
against the (route, tool) baseline (``VolumeBaselines``: a rolling percentile of the last N
results), which ``BaselineKeeper`` persists in a ``bastion.stores.volume.VolumeStore``. The
configuration: ``volume:`` (``bastion.config.volume``) and each route's ``result_volume``.
"""

from bastion.volume.baseline import Verdict, VolumeBaselines
from bastion.volume.keeper import BaselineKeeper
from bastion.volume.measure import MEASURES, Measures, compact_json, measure

__all__ = ["MEASURES", "BaselineKeeper", "Measures", "Verdict", "VolumeBaselines", "compact_json", "measure"]
