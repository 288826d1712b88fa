"""Heuristic flags for pictures that are not photos: drawings, postage stamps, greyscale scans.

The study removed these by hand. The measures are written to the clean table, so that
thresholds can be tuned from the data. They are taken on two small thumbnails.

On a 128-px nearest-neighbour one, so that a photo keeps its sensor noise and a drawing its
flat fills:

- colours: distinct colours at 5 bits per channel; scans and clean drawings have few.
- flat_fraction: share of pixels identical to their right and lower neighbours; fills of
  drawings and stamps are flat, photos are not (except clipped or cut-out backgrounds).
- chroma: mean over all pixels of max(R, G, B) - min(R, G, B). Written for comparison, no
  longer a flag: a photo of a fish on a black (or white) background is mostly neutral
  pixels, and real underwater photos fell to 5.7, under the 6 once set to catch scans.

On a 64-px area-averaged one, as averaging cancels the colour noise of a sensor, a scanner or
JPEG (per pixel) while the colour of a scene (regional) stays:

- midtone_chroma: the same mean over mid-tone pixels only, those with some channel at or
  above DARK_BELOW and some channel at or below BRIGHT_ABOVE, so that neither a dark nor a
  white background dilutes it. Channels rather than luminance, so that a saturated blue
  (0, 0, 200) counts as a mid-tone, not as black; 0 when no pixel is one. The greyscale flag
  reads it: a photo converted to grey stays under 2 with a scanner's colour noise and JPEG
  artefacts (under 5 with heavy noise that a full-resolution JPEG keeps), while the real
  photos of classify2-dev are all over 10 (colour-cast slides, small fish in grey anemones
  and dark scenes included).

A scan toned sepia or yellowed, or printed in one ink, is not flagged: its mid-tones carry
one colour (chroma 15-85). The colour that one tone curve does not explain would tell such a
scan from a photo, but not safely: colour-cast FishPix slides keep as little of it (7.3 on
classify2-dev) as a toned scan with JPEG noise (up to 5 for sepia, 8 for a blue tone), so a
flag on it would drop real photos. Such scans are rare; config/exclusions.tsv removes them.

Each flag is applied only when configured (clean.non_photo), with its threshold. Each is one
class (fishid.clean.check says what one declares), listed in CHECKS, which every column list
of cleaning reads: a new check is its class here, its settings in config/schema.yaml and its test.
"""

import numpy as np
import pandas as pd
from PIL import Image

from fishid.clean.check import Above, Below, Check, Measure, Thumbnail

# Nearest-neighbour keeps a photo's sensor noise and a drawing's flat fills; averaging cancels
# per-pixel colour noise while the colour of a scene stays.
SHARP = Thumbnail(128, Image.Resampling.NEAREST)
AVERAGED = Thumbnail(64, Image.Resampling.BOX)
# A pixel whose brightest channel is under DARK_BELOW is near-black; one whose darkest channel
# is over BRIGHT_ABOVE is near-white. Neither has a colour worth measuring, even in a photo.
DARK_BELOW = 40
BRIGHT_ABOVE = 215


def channel_spread(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=2) - pixels.min(axis=2)


def midtones(pixels: np.ndarray) -> np.ndarray:
    return (pixels.max(axis=2) >= DARK_BELOW) & (pixels.min(axis=2) <= BRIGHT_ABOVE)


def midtone_chroma(pixels: np.ndarray) -> float:
    chosen = midtones(pixels)
    return float(channel_spread(pixels)[chosen].mean()) if chosen.any() else 0.0


def distinct_colours(pixels: np.ndarray) -> int:
    quantised = pixels >> 3
    codes = (quantised[..., 0] << 10) | (quantised[..., 1] << 5) | quantised[..., 2]
    return int(len(np.unique(codes)))


def flat_fraction(pixels: np.ndarray) -> float:
    right = (pixels[:-1, 1:] == pixels[:-1, :-1]).all(axis=2)
    below = (pixels[1:, :-1] == pixels[:-1, :-1]).all(axis=2)
    return float((right & below).mean()) if right.size else 1.0


class Greyscale(Below):
    name = "greyscale"
    measures = (
        # Whole-picture chroma decides nothing since it took dark photos for scans; kept to compare.
        Measure("chroma", SHARP, lambda pixels: round(float(channel_spread(pixels).mean()), 2)),
        Measure("midtone_chroma", AVERAGED, lambda pixels: round(midtone_chroma(pixels), 2)),
    )
    reads = "midtone_chroma"
    setting = "midtone_chroma_below"
    reason = "greyscale (mid-tone chroma {value:g} < {limit:g})"


class FewColours(Below):
    name = "few_colours"
    measures = (Measure("colours", SHARP, distinct_colours, int),)
    reads = "colours"
    setting = "colours_below"
    reason = "few colours ({value:g} < {limit:g})"


class FlatAreas(Above):
    name = "flat_areas"
    measures = (Measure("flat_fraction", SHARP, lambda pixels: round(flat_fraction(pixels), 4)),)
    reads = "flat_fraction"
    setting = "flat_fraction_above"
    reason = "large flat areas ({value:.0%} of pixels > {limit:.0%})"


# In the order of the clean table's measure columns and of the reasons that join in a row's reason.
CHECKS: tuple[Check, ...] = (Greyscale(), FewColours(), FlatAreas())


def measure_columns(kind: type | None = None) -> list[str]:
    """The checks' measure columns in table order (only those of `kind`, int or float, if given)."""
    return [m.column for check in CHECKS for m in check.measures if kind is None or m.kind is kind]


def measure(image: Image.Image) -> dict:
    pixels = {}
    row = {}
    for check in CHECKS:
        for m in check.measures:
            if m.thumbnail not in pixels:
                pixels[m.thumbnail] = m.thumbnail.pixels(image)
            row[m.column] = m.compute(pixels[m.thumbnail])
    return row


def non_photo_reasons(measures: pd.DataFrame, settings: dict) -> pd.Series:
    """Per row, the configured flags it raises with measure and threshold ("; "-joined), or ""."""
    reasons = pd.Series("", index=measures.index)
    for check in CHECKS:
        if not settings.get(check.name):
            continue
        raised, text = check.flags(measures, settings[check.name])
        raised = raised.fillna(False).astype(bool)
        reasons[raised] = reasons[raised].where(reasons[raised] == "", reasons[raised] + "; ") + text[raised]
    return reasons
