"""Photos uploaded to the Predict page: refused unless each is under the size caps (bytes,
and pixels as its header gives them) and decodes as an image (the cleaning stage's decoder),
then labelled by `fishid predict`'s own function, so that the page and the command give the
same labels and scores."""

import tempfile
from pathlib import Path

import pandas as pd

from fishid.clean.decode import DecodeError, decode
from fishid.download.store import header_size
from fishid.evaluate import predict

MAX_FILE_BYTES = 20 * 1024 * 1024
# A few hundred kB of PNG can declare 81 megapixels, which decoding (and the RGB copy)
# turns into about a gigabyte; 50 megapixels still takes a full-size photo of most cameras.
MAX_PIXELS = 50_000_000


def refusals(
    files: list[tuple[str, bytes]], max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS
) -> list[str]:
    """Why each unusable upload is refused (nothing when all are images under the caps)."""
    problems = []
    for name, data in files:
        if len(data) > max_bytes:
            problems.append(f"{name}: {len(data):,} bytes, over the limit of {max_bytes:,} per photo")
            continue
        # From the header (nothing decoded yet); a file without a readable one is left to decode() to name.
        size = header_size(data)
        if size and size[0] * size[1] > max_pixels:
            problems.append(f"{name}: {size[0] * size[1]:,} pixels, over the limit of {max_pixels:,} per photo")
            continue
        try:
            decode(data, max_pixels)
        except DecodeError as error:
            problems.append(f"{name}: not an image ({error})")
    return problems


def predict_uploads(model_dir, files: list[tuple[str, bytes]]) -> pd.DataFrame:
    """`fishid predict` on the uploads, written under names of our own (a client's file name
    is never a path here); the table's `file` column gives the names as uploaded."""
    with tempfile.TemporaryDirectory(prefix="fishid-review-") as folder:
        names = {}
        for i, (name, data) in enumerate(files):
            stored = f"{i:05d}{Path(name).suffix.lower()[:8] if Path(name).suffix.isascii() else ''}"
            Path(folder, stored).write_bytes(data)
            names[stored] = name
        table = predict.predict_folder(model_dir, folder)
    table["file"] = table["file"].map(names)
    return table


def predict_path(model_dir, folder) -> pd.DataFrame:
    return predict.predict_folder(model_dir, folder)
