"""Heuristic flags for pictures that are not photos: drawings, postage stamps, scans.

The study removed these by hand. Three measures are taken on one small thumbnail
(nearest-neighbour, so that a photo keeps its sensor noise and a drawing its flat fills)
and written to the clean table, so that thresholds can be tuned from the data:

- chroma: mean over pixels of max(R, G, B) - min(R, G, B); a greyscale picture is ~0.
- colours: distinct colours at 5 bits per channel; scans and clean drawings have few.
- flat_fraction: share of pixels identical to their right and lower neighbours; fills of
  drawings and stamps are flat, photos are not (except clipped or cut-out backgrounds).

Each flag is applied only when configured (clean.non_photo), with its threshold.
"""

import numpy as np
import pandas as pd
from PIL import Image

THUMBNAIL_SIDE = 128


def measure(image: Image.Image) -> dict:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.NEAREST)
    pixels = np.asarray(small.convert("RGB"), dtype=np.int16)
    chroma = float((pixels.max(axis=2) - pixels.min(axis=2)).mean())
    quantised = pixels >> 3
    codes = (quantised[..., 0] << 10) | (quantised[..., 1] << 5) | quantised[..., 2]
    right = (pixels[:-1, 1:] == pixels[:-1, :-1]).all(axis=2)
    below = (pixels[1:, :-1] == pixels[:-1, :-1]).all(axis=2)
    flat = float((right & below).mean()) if right.size else 1.0
    return {"chroma": round(chroma, 2), "colours": int(len(np.unique(codes))), "flat_fraction": round(flat, 4)}


def non_photo_reasons(measures: pd.DataFrame, settings: dict) -> pd.Series:
    """Per row, the configured flags it raises with measure and threshold ("; "-joined), or ""."""
    flags = []
    greyscale = settings.get("greyscale")
    if greyscale:
        limit = greyscale["chroma_below"]
        flags.append(
            (measures["chroma"] < limit, measures["chroma"].map(lambda v: f"greyscale (chroma {v:g} < {limit:g})"))
        )
    few = settings.get("few_colours")
    if few:
        limit = few["colours_below"]
        flags.append(
            (measures["colours"] < limit, measures["colours"].map(lambda v: f"few colours ({v:g} < {limit:g})"))
        )
    flat = settings.get("flat_areas")
    if flat:
        limit = flat["flat_fraction_above"]
        flags.append(
            (
                measures["flat_fraction"] > limit,
                measures["flat_fraction"].map(lambda v: f"large flat areas ({v:.0%} of pixels > {limit:.0%})"),
            )
        )
    reasons = pd.Series("", index=measures.index)
    for raised, text in flags:
        raised = raised.fillna(False).astype(bool)
        reasons[raised] = reasons[raised].where(reasons[raised] == "", reasons[raised] + "; ") + text[raised]
    return reasons
