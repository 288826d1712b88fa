"""What a cleaning check is: the measures it adds to the clean table, and the flag it raises.

A check is one class, listed in fishid.clean.photo_filters.CHECKS. The columns of the per-image
and clean tables, the per-image cache's contents and the "not a photo" reasons all follow from
that list, so that a new check is its class, its test and its settings in config/schema.yaml
(which are also where a default threshold would go: a check names its settings, never repeats them).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from PIL import Image


@dataclass(frozen=True)
class Thumbnail:
    """A small copy of the image to measure on; the resampling decides what survives (noise, fills)."""

    side: int
    resample: Image.Resampling

    def pixels(self, image: Image.Image) -> np.ndarray:
        small = image.copy()
        small.thumbnail((self.side, self.side), self.resample)
        return np.asarray(small.convert("RGB"), dtype=np.int16)


@dataclass(frozen=True)
class Measure:
    """A column of the clean table, computed from one thumbnail's pixels (rounded as written)."""

    column: str
    thumbnail: Thumbnail
    compute: Callable[[np.ndarray], float | int]
    # How a row read back as text (the cache, a shard's table) is typed again.
    kind: type = float


class Check:
    """A flag on one measure against one threshold; a check of another shape overrides `flags`."""

    name: ClassVar[str]  # its key under clean.non_photo: the flag is raised only when configured
    measures: ClassVar[tuple[Measure, ...]]
    reads: ClassVar[str]  # the measure column it decides on
    setting: ClassVar[str]  # the threshold's key in its settings
    reason: ClassVar[str]  # format string: {value} is the measure, {limit} the threshold

    def raised(self, values: pd.Series, limit) -> pd.Series:
        raise NotImplementedError

    def flags(self, measures: pd.DataFrame, settings: dict) -> tuple[pd.Series, pd.Series]:
        """Per row, whether the flag is raised (NA where a measure is missing), and its reason."""
        limit = settings[self.setting]
        values = measures[self.reads]
        return self.raised(values, limit), values.map(lambda v: self.reason.format(value=v, limit=limit))


class Below(Check):
    def raised(self, values: pd.Series, limit) -> pd.Series:
        return values < limit


class Above(Check):
    def raised(self, values: pd.Series, limit) -> pd.Series:
        return values > limit
