"""Where the fish are in a synthetic picture: one box per fish, known without a detector.

The boxes come from the same coverage layers the renderer blends (synthetic_render._fish_layer
for each pose of synthetic_scene.fish_poses, and the occluding tentacles of
synthetic_scene._occluder), so a change to the drawing moves the boxes with it. They are the
ground truth a detector trains and is scored on (fishid.detect).

A box is (x0, y0, x1, y1) in the pixels of the picture the record serves: x0, y0 the first
column and row the fish covers, x1, y1 one past the last (PIL's crop box, torchvision's box
format). It bounds what is visible, as Pascal VOC's annotators drew them: a pixel is the
fish's when at least half of it shows that fish, after the fish drawn in front of it and the
tentacles in front of all of them; a fish of which fewer than MIN_VISIBLE_PIXELS show (a fin
at the frame's edge, a tail between tentacles) has no box.

Which pictures have boxes:
- every photo: the scenes (a school gives one box per fish), the planted photo defects
  (label conflicts, specimens on a tray and in ethanol, mislabelled, excluded, too small,
  refused licences, truncated: the boxes of the picture whose bytes were cut) and near
  duplicates (the original's boxes, through the copy's crop and scale);
- none: drawings, stamps and greyscale scans (not photos of a fish: cleaning drops them before
  any detector sees them) and the HTML page served as a photo.
"""

from __future__ import annotations

import math

import numpy as np

from fishid.sources import synthetic_render as draw
from fishid.sources import synthetic_scene as scene

Box = tuple[int, int, int, int]

# Half a pixel's coverage: with the renderer's 2x2 supersampling, two of four samples.
VISIBLE = 0.5
MIN_VISIBLE_PIXELS = 10
NOT_PHOTOS = ("drawing", "stamp", "greyscale")


def fish_boxes(media_url: str) -> list[Box]:
    """The boxes of every visible fish in the picture a `synthetic:` media_url describes, in
    drawing order (the main fish last); [] for pictures that are no photo of a fish."""
    pattern, params, size = draw.decode_url(media_url)
    return boxes_of(pattern, params, size)


def boxes_of(pattern: dict, params: dict, size=(160, 120)) -> list[Box]:
    """fish_boxes of a picture given by its pattern, params and size."""
    if params.get("style", "photo") in NOT_PHOTOS or params.get("serve") == "html":
        return []
    boxes = [box for cover in visible_coverage(pattern, params, size) if (box := coverage_box(cover))]
    if "copy" in params:
        boxes = [box for original in boxes if (box := copied_box(original, params["copy"], size))]
    return boxes


def visible_coverage(pattern: dict, params: dict, size=(160, 120)) -> list[np.ndarray]:
    """Per fish, in drawing order, the share of each pixel that shows it (height x width, 0-1)."""
    width, height = int(size[0]), int(size[1])
    # A v1 picture (no scene) draws one fish from the picture's own params.
    poses = scene.fish_poses(params) if "scene" in params else [params]
    layers = [draw._fish_layer(pattern, pose, width, height)[1] for pose in poses]
    hidden = np.zeros((height, width), np.float32)
    if "occluder" in params:
        hidden = scene._occluder(params["occluder"], params, width, height)[1]
    visible = []
    for alpha in reversed(layers):  # front to back: each fish hides those drawn before it
        visible.append(alpha * (1.0 - hidden))
        hidden = hidden + alpha - hidden * alpha
    return visible[::-1]


def coverage_box(cover: np.ndarray, visible: float = VISIBLE, min_pixels: int = MIN_VISIBLE_PIXELS) -> Box | None:
    """The smallest box holding every pixel at least `visible` covered; None under `min_pixels`."""
    rows, cols = np.nonzero(cover >= visible)
    if len(rows) < min_pixels:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def copied_box(box: Box, copy: dict, size) -> Box | None:
    """A box of the original picture in a near-duplicate copy (synthetic_defects.copied: cropped,
    then scaled), rounded outwards; None when the crop cut the fish off."""
    width, height = int(size[0]), int(size[1])
    left, top, right, bottom = copy["crop"]
    crop = (round(left * width), round(top * height), width - round(right * width), height - round(bottom * height))
    cropped = (crop[2] - crop[0], crop[3] - crop[1])
    target = (max(1, round(cropped[0] * copy["scale"])), max(1, round(cropped[1] * copy["scale"])))
    sx, sy = target[0] / cropped[0], target[1] / cropped[1]
    x0 = max(0, math.floor((box[0] - crop[0]) * sx))
    y0 = max(0, math.floor((box[1] - crop[1]) * sy))
    x1 = min(target[0], math.ceil((box[2] - crop[0]) * sx))
    y1 = min(target[1], math.ceil((box[3] - crop[1]) * sy))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
