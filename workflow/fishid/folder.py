"""An existing image tree as a source: `class/*.jpg`, or already split as `train/class/*.jpg`
and `val/class/*.jpg` (the split goes in the records' `source_split`).

So datasets such as the Kaggle fish set or ANIMAL-10N go through the same pipeline as
the web sources. A folder's label becomes the record's taxon, through `labels` when the
folder names are not scientific names.
"""

from __future__ import annotations

from pathlib import Path

from fishid.sources import Context, Listing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_records(spec: dict, context: Context) -> Listing:
    root = Path(spec["path"])
    if not root.is_dir():
        raise ValueError(f"sources.{context.name}.path: {root} is not a folder")
    labels = spec.get("labels", {})
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    is_split = bool(top) and all(p.name.lower() in SPLIT_FOLDERS for p in top)
    groups = [(SPLIT_FOLDERS[p.name.lower()], c) for p in top for c in sorted(p.iterdir()) if c.is_dir()]
    if not is_split:
        groups = [("", c) for c in top]
    records, notes = [], {}
    for split, folder in groups:
        taxon = labels.get(folder.name, folder.name)
        images = _images(folder)
        if not images:
            notes[taxon] = f"no image in {folder}"
        for path in images:
            relative = path.relative_to(root).as_posix()
            records.append(
                {
                    "record_id": f"{context.name}:{relative}",
                    "taxon": taxon,
                    "source_taxon": folder.name,
                    "media_url": path.resolve().as_uri(),
                    "page_url": "",
                    "license": spec.get("licence", ""),
                    "rights_holder": spec.get("rights_holder", ""),
                    "creator": spec.get("creator", ""),
                    "occurrence_id": f"{context.name}:{relative}",
                    "basis_of_record": "",
                    "dataset_key": f"folder:{root.name}",
                    "source_split": split,
                }
            )
    unknown = set(labels) - {folder.name for _, folder in groups}
    if unknown:
        raise ValueError(f"sources.{context.name}.labels: no folder named {', '.join(sorted(unknown))} in {root}")
    return Listing(records, notes)
