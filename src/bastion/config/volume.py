"""``volume:``: how Bastion learns each tool's usual result volume and what it calls anomalous.

Issue 14, "Result volume"::

    volume:
      samples: 200          # the last 200 results of each (route, tool) make its baseline
      percentile: 95        # the baseline is their 95th percentile, per measure
      min_samples: 20       # nothing is flagged before a tool has this many results
      factor: 10            # anomalous: a measure over factor x its baseline ...
      floor_bytes: 65536    # ... and over its floor (bytes of the result's compact JSON,
      floor_blocks: 50      #     text content blocks,
      floor_items: 100      #     items of structuredContent's top-level arrays)
      max_baselines: 5000   # (route, tool) pairs tracked; more are not learned

What happens to an anomalous result is the route's ``result_volume`` (``flag``, the default:
relayed and recorded; ``withhold``: the client gets a tool error instead; ``off``: not
measured), which a tool's entry in ``tools:`` may override (``bastion.config.routes``). How
the baselines are kept and persisted: ``bastion.volume``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from bastion.config.base import _Model

__all__ = ["VolumeSettings"]


class VolumeSettings(_Model):
    """``volume:`` (see the module docstring). ``samples`` >= ``min_samples`` >= 1; ``percentile``
    in (0, 100]; ``factor`` >= 1; floors >= 0. A baseline costs about 6 KB of memory at 200
    samples, so ``max_baselines`` bounds the memory the baselines can take (30 MB by default)."""

    samples: int = Field(default=200, ge=1, le=10_000)
    percentile: float = Field(default=95.0, gt=0, le=100)
    min_samples: int = Field(default=20, ge=1)
    factor: float = Field(default=10.0, ge=1)
    floor_bytes: int = Field(default=65_536, ge=0)
    floor_blocks: int = Field(default=50, ge=0)
    floor_items: int = Field(default=100, ge=0)
    max_baselines: int = Field(default=5_000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _enough_samples(self) -> VolumeSettings:
        if self.min_samples > self.samples:
            raise ValueError(f"volume.min_samples ({self.min_samples}) is more than volume.samples ({self.samples})")
        return self

    @property
    def floors(self) -> tuple[int, int, int]:
        """``(floor_bytes, floor_blocks, floor_items)``, in the order of ``bastion.volume.Measures``."""
        return (self.floor_bytes, self.floor_blocks, self.floor_items)
