"""The boxes a detector found, per photo, kept between runs of rule detect_fish
(results/detect/found), as cleaning keeps its per-image work: a decision that leaves the
detector as it was (a photo excluded or relabelled, a dataset edited) reruns the rule, and only
the photos this detector has not looked at are looked at again. At a class's scale that is the
difference between minutes and hours of GPU time per decision.

An entry is keyed by everything its boxes follow from: the detector (the bytes of its folder's
files: weights and settings, or the record of a pre-trained model's files), the code and the
library versions that run it, and the photo (the bytes of the derived copy it looks at and the
original's size its boxes are scaled to). A retrained detector, edited detection code or a new
derived copy find no entry and start afresh. Never a rule output: Snakemake would delete it
before each run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import pandas as pd

from fishid import codedeps
from fishid.detect import infer
from fishid.detect.boxes import BOX_COLUMNS

# The modules whose code decides the boxes of a photo (with what they import).
DETECTING_MODULES = ("fishid.detect.infer", "fishid.detect.detectors")
LIBRARIES = ("torch", "torchvision", "transformers")
VALUES = ["x0", "y0", "x1", "y1", "score"]


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


@cache
def code_digest() -> str:
    """The detecting modules' files and the libraries' versions."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(codedeps.closure(root, DETECTING_MODULES)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + _file_digest(path))
    for library in LIBRARIES:
        try:
            version = metadata.version(library)
        except metadata.PackageNotFoundError:
            version = ""
        digest.update(f"{library}={version}\0".encode())
    return digest.hexdigest()


def detector_key(folder, detector: str) -> str:
    """The folder of entries made by detector `detector` of `folder`, with this code."""
    digest = hashlib.sha256(f"{detector}\0{code_digest()}\0".encode())
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + _file_digest(path))
    return digest.hexdigest()[:24]


def photo_key(path, original_size) -> str:
    digest = hashlib.sha256(_file_digest(Path(path)))
    digest.update(json.dumps(list(original_size) if original_size else None).encode())
    return digest.hexdigest()


def _entry(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.json"


def _read(root: Path, key: str) -> list | None:
    try:
        boxes = json.loads(_entry(root, key).read_text())
    except (OSError, ValueError):
        return None
    return boxes if isinstance(boxes, list) and all(isinstance(b, list) and len(b) == 5 for b in boxes) else None


def _write(root: Path, key: str, boxes: list) -> None:
    # Written whole and renamed into place: a run killed here leaves no half entry.
    entry = _entry(root, key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = entry.with_name(f"{entry.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(boxes))
    partial.replace(entry)


def detect(
    model,
    photos: Mapping[str, str],
    detector: str,
    original_sizes: Mapping[str, tuple[int, int]],
    cache_root,
    folder,
) -> tuple[pd.DataFrame, int]:
    """fishid.detect.infer.detect's rows for `photos`, the photos this detector has looked at
    before read from `cache_root`: (the rows, in the photos' order; how many photos were read)."""
    root = Path(cache_root) / detector_key(folder, detector)
    keys = {image: photo_key(path, original_sizes.get(image)) for image, path in photos.items()}
    known = {image: _read(root, key) for image, key in keys.items()}
    missing = {image: photos[image] for image, boxes in known.items() if boxes is None}
    found = infer.detect(model, missing, detector, original_sizes)
    for image, rows in found.groupby("image", sort=False):
        known[image] = rows[VALUES].to_numpy().tolist()
    for image in missing:
        known[image] = known[image] or []
        _write(root, keys[image], known[image])
    rows = [
        {"image": image, **dict(zip(VALUES, box)), "detector": detector} for image in photos for box in known[image]
    ]
    return pd.DataFrame(rows, columns=BOX_COLUMNS), len(photos) - len(missing)
