"""A sheet of crops beside their photos: what the detector cut, to look at (the report shows it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

CELL = 160  # each photo and each crop fits a CELL x CELL square
GAP = 4
BOX_COLOUR = (255, 200, 0)


def _fitted(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    scale = CELL / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def _photo_with_box(path, row, original_size) -> Image.Image:
    with Image.open(path) as photo:
        shown = _fitted(photo)
    if row is not None:
        sx, sy = shown.width / original_size[0], shown.height / original_size[1]
        draw = ImageDraw.Draw(shown)
        draw.rectangle((row.x0 * sx, row.y0 * sy, row.x1 * sx, row.y1 * sy), outline=BOX_COLOUR, width=2)
    return shown


def sheet(photos: pd.DataFrame, crops: pd.DataFrame, crop_root, columns: int = 3) -> Image.Image:
    """Rows of (photo with its chosen box, its crop) pairs, `columns` pairs a row, for the photos
    of `photos` (image, path, width, height), in order; a photo without a crop shows no box and
    an empty crop cell."""
    chosen = crops.set_index("image")
    pairs = len(photos)
    rows = max(1, -(-pairs // columns))
    width = columns * (2 * CELL + GAP) + (columns - 1) * 3 * GAP
    canvas = Image.new("RGB", (width, rows * (CELL + GAP) - GAP), "white")
    for i, photo in enumerate(photos.itertuples()):
        row = chosen.loc[photo.image] if photo.image in chosen.index else None
        left = (i % columns) * (2 * CELL + 4 * GAP)
        top = (i // columns) * (CELL + GAP)
        canvas.paste(_photo_with_box(photo.path, row, (photo.width, photo.height)), (left, top))
        if row is not None:
            with Image.open(Path(crop_root, row.path)) as piece:
                canvas.paste(_fitted(piece), (left + CELL + GAP, top))
    return canvas
