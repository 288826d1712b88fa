"""Decode and resize a dataset's images once; every epoch then reads tensors from memory.

The cache is written with numpy only (an .npz of arrays and one JSON string): the job that
builds it never starts PyTorch, which costs more than the caching of a small dataset."""

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from fishid.tables import read_table


def square(image: Image.Image, size: int) -> np.ndarray:
    """An image as a model's input reads it: RGB, resized to size x size (BILINEAR)."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def load_square(path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return square(image, size)


def read_preprocess(derived_root) -> dict:
    """How cleaning made the derived copies (fishid.clean.stage.PREPROCESS_FILE), {} if it did not say."""
    path = Path(derived_root, "preprocess.json")
    return json.loads(path.read_text()) if path.exists() else {}


# What the cache reads of a split table (a folder's own split.tsv needs no more).
SPLIT_INPUT_COLUMNS = ["sha256", "label", "split", "derived_path"]


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (n-1) standard deviation of uint8 images (N, 3, H, W) scaled to
    [0, 1], summed a chunk at a time so that no float copy of every image is made."""
    count, total, squares = 0, np.zeros(3), np.zeros(3)
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256].astype(np.float64) / 255
        count += chunk.size // 3
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    mean = total / max(count, 1)
    variance = (squares - count * mean**2) / max(count - 1, 1)
    return mean.astype(np.float32), np.sqrt(np.maximum(variance, 0)).astype(np.float32)


# The cache's arrays; everything else is in its "meta" JSON string.
ARRAYS = ("images", "labels", "mean", "std")


def build(split_path, derived_root, size: int) -> dict:
    split = read_table(split_path, SPLIT_INPUT_COLUMNS)
    classes = sorted(split["label"].unique())
    images = np.stack([load_square(Path(derived_root, p), size) for p in split["derived_path"]])
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    # The study normalises by the training set's own channel statistics.
    mean, std = channel_stats(images[(split["split"] == "train").to_numpy()])
    return {
        "images": images,
        "labels": np.array([classes.index(label) for label in split["label"]], dtype=np.int64),
        "classes": classes,
        "sha256": list(split["sha256"]),
        "split": list(split["split"]),
        # So that a model can make of a new photo what it was trained on (fishid predict).
        "preprocess": read_preprocess(derived_root),
        "mean": mean,
        "std": std,
        # Lets meta.json name the exact dataset table a model saw.
        "split_crc32": zlib.crc32(Path(split_path).read_bytes()),
        "split_sha256": hashlib.sha256(Path(split_path).read_bytes()).hexdigest(),
    }


def save(cache: dict, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".part")
    meta = {key: value for key, value in cache.items() if key not in ARRAYS}
    with open(tmp, "wb") as out:  # a file, not a name: np.savez would add ".npz" to the name
        np.savez(out, meta=np.array(json.dumps(meta)), **{key: np.asarray(cache[key]) for key in ARRAYS})
    tmp.replace(path)


def load(path) -> dict:
    """The cache as training reads it (as_tensors)."""
    with np.load(path, allow_pickle=False) as stored:
        cache = json.loads(str(stored["meta"]))
        cache.update({key: stored[key] for key in ARRAYS})
    return as_tensors(cache)


def as_tensors(cache: dict) -> dict:
    """The cache with its arrays as tensors (images uint8 N x 3 x H x W, labels int64)."""
    import torch

    return {**cache, **{key: torch.as_tensor(cache[key]) for key in ARRAYS}}


def subset(cache: dict, role: str):
    """(uint8 images, labels) of one split role, as tensors."""
    import torch

    mask = torch.tensor([s == role for s in cache["split"]], dtype=torch.bool)
    return cache["images"][mask], cache["labels"][mask]
