"""Decode and resize a dataset's images once, into one file; the steps that read it map it
(`load`) and read the rows they take: a batch (training's Rows), a split role (evaluation)."""

import hashlib
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fishid import steps
from fishid.tables import read_table

log = logging.getLogger(__name__)


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


def load_squares(paths, size: int, into=None) -> torch.Tensor:
    """uint8 images (N, 3, size, size) of the files at `paths`, written one by one into the
    array returned: no other copy of them is held (a list stacked, then permuted, held three;
    the cache of 50,000 photos peaked at 4.2 GB for 0.6 GB of images, bench/results/scale.md).
    With `into` (a file's path), that array is the file, mapped: the images go to disk as they
    are read, and the kernel holds them only as it has room (10 million photos at 64 px are
    123 GB)."""
    paths = list(paths)
    shape = (len(paths), 3, size, size)
    if into is None or not paths:  # an empty file cannot be mapped
        images = np.empty(shape, dtype=np.uint8)
    else:
        images = np.lib.format.open_memmap(into, mode="w+", dtype=np.uint8, shape=shape)
    for i, path in enumerate(paths):
        images[i] = load_square(path, size).transpose(2, 0, 1)
    return torch.from_numpy(images)


# Up to this many bytes of images, their channel statistics come from one float copy of them
# (four times their bytes); past it, from float64 sums a block of images at a time.
STATS_AT_ONCE_BYTES = 256 * 2**20


def channel_stats(images: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (sample) std of uint8 images scaled to [0, 1], over `rows` (a mask
    or indices; all by default): the study normalises by them. Up to STATS_AT_ONCE_BYTES, one
    float copy of those rows, divided in place. (Summed exactly in float64 chunks instead, the
    statistics moved in their seventh digit, and that alone moved the demo's pre-trained
    backbone, its label queue and its accuracies by several photos.)"""
    indices = torch.arange(len(images)) if rows is None else torch.arange(len(images))[rows]
    if len(indices) * images[:1].nbytes > STATS_AT_ONCE_BYTES:
        return summed_channel_stats(images[block] for block in indices.split(1000))
    pixels = (images if rows is None else images[rows]).float().div_(255)
    return pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))


def summed_channel_stats(parts) -> tuple[torch.Tensor, torch.Tensor]:
    """channel_stats over every image of `parts` (uint8 image tensors, read one after the
    other), summed in float64 a thousand images at a time."""
    total, squares, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for part in parts:
        for block in part.split(1000):
            pixels = block.double().div_(255)
            total += pixels.sum(dim=(0, 2, 3))
            squares += pixels.square_().sum(dim=(0, 2, 3))
            count += block[:, 0].numel()
    mean = total / count
    return mean.float(), ((squares - count * mean.square()) / (count - 1)).sqrt().float()


def cropped_paths(split: pd.DataFrame, derived_root, crops_path, crop_root) -> tuple[list[Path], int]:
    """Each split photo's crop (fishid.detect's crops table), or its derived copy where the
    detector found no fish (that photo is in the detector's review queue): (paths, crops used).
    Whole photos stand in rather than leaving the photo out, so that a model on crops is
    evaluated on the same test photos as the same model on whole photos."""
    crops = read_table(crops_path, ["image", "path"]).set_index("image")["path"]
    paths = [
        Path(crop_root, crops[sha]) if sha in crops.index else Path(derived_root, derived)
        for sha, derived in zip(split["sha256"], split["derived_path"])
    ]
    return paths, int(split["sha256"].isin(crops.index).sum())


def build(split_path, derived_root, size: int, crops_path=None, crop_root=None, scratch=None) -> dict:
    """The dataset's images at `size`, whole, or cut to their fish where `crops_path` (the detect
    stage's crops table, whose files are under `crop_root`) is given; written into the file
    `scratch` as they are read where it is given (load_squares)."""
    split = read_table(split_path, SPLIT_INPUT_COLUMNS)
    classes = sorted(split["label"].unique())
    if crops_path is None:
        paths, cropped = [Path(derived_root, p) for p in split["derived_path"]], 0
    else:
        paths, cropped = cropped_paths(split, derived_root, crops_path, crop_root)
    images = load_squares(paths, size, scratch)
    train = torch.tensor((split["split"] == "train").to_numpy())
    mean, std = channel_stats(images, train)
    return {
        "images": images,
        "labels": torch.tensor([classes.index(label) for label in split["label"]]),
        "classes": classes,
        "sha256": list(split["sha256"]),
        "split": list(split["split"]),
        # So that a model can make of a new photo what it was trained on (fishid predict).
        "preprocess": read_preprocess(derived_root),
        "cropped": cropped,
        # The study normalises by the training set's own channel statistics.
        "mean": mean,
        "std": std,
        # Lets meta.json name the exact dataset table a model saw.
        "split_crc32": zlib.crc32(Path(split_path).read_bytes()),
        "split_sha256": hashlib.sha256(Path(split_path).read_bytes()).hexdigest(),
    }


def save(cache: dict, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".part")
    torch.save(cache, tmp)
    tmp.replace(path)


def load(path) -> dict:
    """The cache, its images mapped from the file rather than read: a step reads the pages of the
    rows it takes (evaluation its held-out photos: 30 MB of a 20,000-photo cache's 246 MB)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def role_mask(cache: dict, role: str) -> torch.Tensor:
    return torch.tensor([s == role for s in cache["split"]], dtype=torch.bool)


def subset(cache: dict, role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of one split role: a copy of those images."""
    mask = role_mask(cache, role)
    return cache["images"][mask], cache["labels"][mask]


class Rows:
    """Rows of the cache's images, read only where they are indexed: a training set that is not
    a copy of its images (the cache is mapped from its file, imagecache.load)."""

    def __init__(self, images: torch.Tensor, rows: torch.Tensor):
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> torch.Tensor:
        return self.images[self.rows[index]]

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.images[:1].nbytes

    def to(self, device) -> torch.Tensor:
        return self.images[self.rows].to(device)


def role_rows(cache: dict, role: str, without: int | None = None) -> torch.Tensor:
    """Indices of one split role's photos, leaving out class index `without` (None: none)."""
    mask = role_mask(cache, role)
    if without is not None:
        mask &= cache["labels"] != without
    return mask.nonzero().squeeze(1)


def role_labels(cache: dict, role: str) -> np.ndarray:
    """The class names of one split role's photos, without reading their images."""
    return np.array(cache["classes"])[cache["labels"][role_mask(cache, role)].numpy()]


@steps.declare(
    "cache",
    "decode and resize a dataset's images once",
    steps.inp("split"),
    steps.inp("derived"),
    steps.Option("size", "wildcards", type="int"),
    steps.inp("crops", default=None, help="the detect stage's crops table: cut each photo to its fish"),
    steps.inp("crop_store", default=None, help="the folder the crops table's paths are in"),
    steps.out("out", key=""),
)
def cache_step(split, derived, size, out, crops=None, crop_store=None):
    """The `cache` step (rules cache_images, cache_crops): build and save."""
    # The images go to disk as they are read, and from there into the cache's file.
    scratch = Path(str(out) + ".images.part")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        cache = build(split, derived, size, crops, crop_store, scratch)
        save(cache, out)
    finally:
        scratch.unlink(missing_ok=True)
    if crops:
        log.info("%d of %d photos cropped to their fish", cache["cropped"], len(cache["sha256"]))
