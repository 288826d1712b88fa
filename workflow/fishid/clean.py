"""The cleaning stage: decode every stored image, keep what is a usable RGB photo, and
write down a reason for everything dropped.

One row per image (SHA-256). Records that point to the same bytes are exact duplicates:
they become one image, and if they disagree on the species the image is a label
conflict and is dropped.
"""

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from fishid.tables import CLEAN_COLUMNS, DOWNLOAD_COLUMNS, RECORD_COLUMNS, read_table, write_table

EXCLUSION_COLUMNS = ["id", "reason"]


def dhash(image: Image.Image) -> str:
    """64-bit difference hash: near-identical photos get hashes a few bits apart."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def decode(path) -> Image.Image:
    """Fully decode an image (a truncated file fails here, not later in training) as RGB."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


def clean_image(sha256: str, source_path, derived_root, min_side: int, max_side: int) -> dict:
    row = {"sha256": sha256, "width": 0, "height": 0, "format": "", "phash": "", "derived_path": ""}
    try:
        with Image.open(source_path) as probe:
            row["format"] = probe.format or ""
        image = decode(source_path)
    except Exception as error:  # PIL raises many types for corrupt data; all mean the same here
        return {**row, "kept": False, "reason": f"undecodable: {type(error).__name__}: {error}"}
    row.update(width=image.width, height=image.height, phash=dhash(image))
    if min(image.size) < min_side:
        return {**row, "kept": False, "reason": f"too small: {image.width}x{image.height} < {min_side}"}
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    rel = f"{sha256[:2]}/{sha256}.jpg"
    target = Path(derived_root, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, quality=95)
    return {**row, "kept": True, "reason": "", "derived_path": rel}


def read_exclusions(path) -> dict[str, str]:
    table = read_table(path, EXCLUSION_COLUMNS)
    blank = table[table["reason"].str.strip() == ""]
    if len(blank):
        raise ValueError(f"{path}: give a reason for every exclusion (missing for {', '.join(blank['id'])})")
    return dict(zip(table["id"], table["reason"]))


def images_with_labels(records: pd.DataFrame, downloads: pd.DataFrame) -> pd.DataFrame:
    """One row per stored image: its path, the taxa and the records that point to it."""
    joined = downloads[downloads["sha256"] != ""].merge(records[["record_id", "taxon"]], on="record_id")
    return (
        joined.groupby("sha256", sort=True)
        .agg(
            path=("path", "first"),
            taxa=("taxon", lambda t: sorted(set(t))),
            record_ids=("record_id", lambda r: ",".join(sorted(r))),
        )
        .reset_index()
    )


def decide(images: pd.DataFrame, decoded: list[dict], exclusions: dict[str, str]) -> pd.DataFrame:
    rows = []
    for image, row in zip(images.to_dict("records"), decoded):
        taxa, record_ids = image["taxa"], image["record_ids"].split(",")
        row.update(taxon=taxa[0] if len(taxa) == 1 else "", record_ids=image["record_ids"], duplicate_of="")
        excluded = [exclusions[i] for i in [image["sha256"], *record_ids] if i in exclusions]
        if not row["kept"]:
            pass
        elif excluded:
            row.update(kept=False, reason=f"excluded by user: {excluded[0]}")
        elif len(taxa) > 1:
            row.update(kept=False, reason=f"label conflict: same photo listed as {' and '.join(taxa)}")
        rows.append(row)
    return pd.DataFrame(rows, columns=CLEAN_COLUMNS)


def run(
    record_paths,
    download_paths,
    exclusions_path,
    store_root,
    derived_root,
    table_path,
    min_side: int,
    max_side: int,
    threads: int = 1,
) -> pd.DataFrame:
    records = pd.concat([read_table(p, RECORD_COLUMNS) for p in record_paths])
    downloads = pd.concat([read_table(p, DOWNLOAD_COLUMNS) for p in download_paths])
    images = images_with_labels(records, downloads)
    missing = [p for p in images["path"] if not Path(store_root, p).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {', '.join(map(str, download_paths))} are not in "
            f"{store_root} (first: {missing[0]}): restore the store (dvc pull) or delete those "
            "download tables so that they are fetched again"
        )
    args = [
        (sha, Path(store_root, path), derived_root, min_side, max_side)
        for sha, path in zip(images["sha256"], images["path"])
    ]
    with ProcessPoolExecutor(max_workers=max(1, threads)) as pool:
        decoded = list(pool.map(clean_image, *zip(*args), chunksize=32)) if args else []
    table = decide(images, decoded, read_exclusions(exclusions_path))
    if not table["kept"].any():
        reasons = table["reason"].str.split(":").str[0].value_counts().to_dict()
        raise ValueError(f"cleaning kept no image out of {len(table)}; reasons: {reasons}")
    write_table(table, table_path, CLEAN_COLUMNS)
    return table
