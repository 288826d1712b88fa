"""A photo cut to its fish: which box, how much margin, the crop's name and its provenance.

The box: of a photo's boxes with a score at or above the threshold, the largest (by area; on a
tie, the better scored, then the first). A photo of several fish is mostly a photo of the one
in front, which is also the biggest; the species label is the photo's, so one crop per photo
keeps one label per crop. A photo with no box at the threshold gets no crop but a row in the
review queue (reason `no_fish_found`): never a silent drop.

The crop: the box grown by `padding` of its width on the left and the right and of its height
at the top and the bottom (the fins' tips and some background help a classifier), then clamped
to the photo. Crops are stored as PNG (no second round of JPEG artefacts) under the SHA-256 of
their bytes, as the download store names photos (fishid.download.store.put).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping

import pandas as pd
from PIL import Image

from fishid.detect.boxes import COORDINATES
from fishid.download import store

CROP_COLUMNS = [
    "crop",  # the crop's SHA-256
    "path",  # in the crop store
    "image",  # the photo's SHA-256
    "x0",  # the chosen box, in the photo's original pixels
    "y0",
    "x1",
    "y1",
    "score",
    "detector",
    "padding",
    "crop_x0",  # the box cut out, margin included, in the photo's original pixels
    "crop_y0",
    "crop_x1",
    "crop_y1",
]
REVIEW_COLUMNS = ["image", "reason", "detector", "best_score", "threshold"]
NO_FISH = "no_fish_found"
CROP_FORMAT = "png"


def chosen_box(boxes: pd.DataFrame, threshold: float) -> pd.Series | None:
    """The row of one photo's boxes that its crop follows, or None when none reaches `threshold`."""
    sure = boxes[boxes["score"] >= threshold]
    if sure.empty:
        return None
    areas = (sure["x1"] - sure["x0"]) * (sure["y1"] - sure["y0"])
    ranked = sure.assign(_area=areas).sort_values(["_area", "score"], ascending=False, kind="stable")
    return ranked.iloc[0].drop("_area")


def padded_box(box, padding: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """`box` grown by `padding` of its side, to whole pixels outwards, clamped to an image of `size`."""
    x0, y0, x1, y1 = box
    dx, dy = padding * (x1 - x0), padding * (y1 - y0)
    width, height = size
    left, top = max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy))
    right, bottom = min(width, math.ceil(x1 + dx)), min(height, math.ceil(y1 + dy))
    if right <= left or bottom <= top:
        raise ValueError(f"box {tuple(box)} lies outside the {width}x{height} photo")
    return left, top, right, bottom


def crop(photo: Image.Image, box, padding: float, original_size: tuple[int, int] | None = None):
    """(the crop, its box in original pixels) of `photo` at `box` (original pixels). `original_size`:
    the size the box's pixels are of, when `photo` is a resized copy (the clean stage's derived one)."""
    original_size = original_size or photo.size
    cut = padded_box(box, padding, original_size)
    sx, sy = photo.width / original_size[0], photo.height / original_size[1]
    in_photo = (round(cut[0] * sx), round(cut[1] * sy), round(cut[2] * sx), round(cut[3] * sy))
    return photo.convert("RGB").crop(in_photo), cut


def cut_to_fish(photo: Image.Image, boxes: pd.DataFrame, threshold: float, padding: float, original_size=None):
    """(the crop of `photo` to its chosen box of `boxes`, the box row, the cut in original pixels),
    or None where no box reaches `threshold`: the one place a photo becomes its crop, for the
    detect stage, `fishid predict` and the review app alike."""
    chosen = chosen_box(boxes, threshold)
    if chosen is None:
        return None
    piece, cut = crop(photo, [chosen[column] for column in COORDINATES], padding, original_size)
    return piece, chosen, cut


def crop_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=CROP_FORMAT)
    return buffer.getvalue()


def crop_name(data: bytes) -> tuple[str, str]:
    """(SHA-256, path in the crop store) of a crop's bytes, as the download store names photos."""
    sha256 = hashlib.sha256(data).hexdigest()
    return sha256, store.relative_path(sha256, CROP_FORMAT)


def provenance(image: str, chosen: pd.Series, padding: float, cut, sha256: str, path: str) -> dict:
    """The crops table's row: the crop, the photo, the box, the margin and the detector."""
    box = {column: float(chosen[column]) for column in COORDINATES}
    cut = dict(zip(["crop_x0", "crop_y0", "crop_x1", "crop_y1"], cut))
    return {"crop": sha256, "path": path, "image": image, **box, "score": float(chosen["score"])} | {
        "detector": chosen["detector"],
        "padding": padding,
        **cut,
    }


def review_row(image: str, boxes: pd.DataFrame, detector: str, threshold: float) -> dict:
    best = float(boxes["score"].max()) if not boxes.empty else ""
    return {"image": image, "reason": NO_FISH, "detector": detector, "best_score": best, "threshold": threshold}


def crop_photos(
    boxes: pd.DataFrame,
    photos: Mapping[str, str],
    crop_root,
    detector: str,
    threshold: float,
    padding: float,
    original_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crop every photo of `photos` ({image: path}) to its chosen box of `boxes` (the boxes table)
    into the store at `crop_root`: (the crops table, the review queue of photos without a crop)."""
    crops, review = [], []
    by_image = {image: rows for image, rows in boxes.groupby("image", sort=False)}
    for image, path in photos.items():
        mine = by_image.get(image, boxes.iloc[:0])
        with Image.open(path) as photo:
            found = cut_to_fish(photo, mine, threshold, padding, (original_sizes or {}).get(image))
        if found is None:
            review.append(review_row(image, mine, detector, threshold))
            continue
        piece, chosen, cut = found
        sha256, relative = store.put(crop_root, crop_bytes(piece), CROP_FORMAT)
        crops.append(provenance(image, chosen, padding, cut, sha256, relative))
    return pd.DataFrame(crops, columns=CROP_COLUMNS), pd.DataFrame(review, columns=REVIEW_COLUMNS)
