"""An existing image tree as a source: `class/*.jpg`, or already split as `train/class/*.jpg`
and `val/class/*.jpg` (the split goes in the records' `source_split`).

So datasets such as the Kaggle fish set or ANIMAL-10N go through the same pipeline as
the web sources. A folder's label becomes the record's taxon, through `labels` when the
folder names are not scientific names.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

from fishid.sources.base import FOLDER_KEY, Context, Listing, SourceKind, config_says
from fishid.tables import readable

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def image_files(folder: Path, real_root: Path, skipped: list[str]) -> list[Path]:
    """The image files under `folder` whose real path (symlinks resolved) lies inside the
    source's folder; the others are added to `skipped`, with the reason."""
    images = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        real = path.resolve()
        if not real.is_relative_to(real_root):
            skipped.append(f"{readable(str(path.relative_to(folder.parent)))}: a link to outside the folder")
        elif real.is_file():
            images.append(path)
    return images


def list_records(spec: dict, context: Context) -> Listing:
    """One record per image file; a class folder's subfolders belong to that class.

    Files are read only under `path`: a symbolic link that leads outside it is skipped
    (and said so in the notes). Names that are not UTF-8 are written with \\xNN escapes.
    """
    root = Path(spec["path"])
    if not root.is_dir():
        raise ValueError(f"sources.{context.name}.path: {root} is not a folder")
    real_root = root.resolve()
    labels = spec.get("labels", {})
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    is_split = bool(top) and all(p.name.lower() in SPLIT_FOLDERS for p in top)
    if is_split:
        groups = [(SPLIT_FOLDERS[p.name.lower()], c) for p in top for c in sorted(p.iterdir()) if c.is_dir()]
    else:
        groups = [("", c) for c in top]
    records, notes = [], {}
    for split, folder in groups:
        name = readable(folder.name)
        taxon = labels.get(name, name)
        skipped = []
        images = image_files(folder, real_root, skipped)
        if not images:
            notes[taxon] = f"no image in {readable(str(folder))}"
        if skipped:
            log.warning("sources.%s: skipped %s", context.name, "; ".join(skipped))
            notes[taxon] = "; ".join(([notes[taxon]] if taxon in notes else []) + [f"skipped {s}" for s in skipped])
        for path in images:
            relative = readable(path.relative_to(root).as_posix())
            records.append(
                {
                    "record_id": f"{context.name}:{relative}",
                    "taxon": taxon,
                    "source_taxon": name,
                    # Under the real folder, so the fetch stage can tell the file belongs to it.
                    "media_url": (real_root / path.relative_to(root)).as_uri(),
                    "page_url": "",
                    "license": spec.get("licence", ""),
                    "rights_holder": spec.get("rights_holder", ""),
                    "creator": spec.get("creator", ""),
                    "occurrence_id": f"{context.name}:{relative}",
                    "basis_of_record": "",
                    "dataset_key": f"{FOLDER_KEY}{readable(real_root.name)}",
                    "source_split": split,
                }
            )
    unknown = set(labels) - {readable(folder.name) for _, folder in groups}
    if unknown:
        raise ValueError(f"sources.{context.name}.labels: no folder named {', '.join(sorted(unknown))} in {root}")
    return Listing(records, notes)


def local_inputs(spec: dict) -> list[str]:
    return [spec["path"]] if spec.get("path") else []


def cite(spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    """What the configuration says of the folder's photos."""
    rights = config_says(spec) or "the configuration names no rights holder or licence"
    return f"Photos from {spec['path']}: {rights}.", ""


KIND = SourceKind("folder", list_records, cite, title="a folder", local_inputs=local_inputs, local_files=True)
