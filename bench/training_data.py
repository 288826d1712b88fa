"""Data for the training benchmarks: the pipeline's synthetic clownfish photos, written as an
image folder (train/<species>/, val/<species>/, what torchvision's ImageFolder and the
study's scripts read) and as the pipeline's image cache of the same files."""

import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from fishid import imagecache, synthetic  # noqa: E402
from fishid.tables import write_table  # noqa: E402

PATTERNS = ROOT / "config" / "synthetic_species.tsv"
# The demo's species and counts (config/config.yaml).
FOUR_SPECIES = {
    "Amphiprion clarkii": 160,
    "Amphiprion perideraion": 100,
    "Amphiprion ocellaris": 130,
    "Amphiprion frenatus": 80,
}
POOL = {
    name: 100
    for name in (
        "Amphiprion melanopus",
        "Amphiprion chrysopterus",
        "Amphiprion percula",
        "Amphiprion bicinctus",
        "Amphiprion nigripes",
        "Amphiprion ephippium",
    )
}


def image_folder(folder, counts: dict, size=(160, 120), seed=2018, val_fraction=0.1) -> Path:
    """Render the photos once into `folder` (reused when there); the first `val_fraction`
    of each species is validation."""
    folder = Path(folder)
    table = folder / "split.tsv"
    if table.exists():
        return table
    patterns = synthetic.load_patterns(PATTERNS)
    rows = []
    for record in synthetic.list_records(patterns, counts, seed, size):
        taxon = record["taxon"]
        index = sum(r["label"] == taxon for r in rows)
        split = "val" if index < round(val_fraction * counts[taxon]) else "train"
        path = Path(split, taxon.replace(" ", "_"), f"{index:04d}.jpg")
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        synthetic.render_url(record["media_url"]).save(folder / path, quality=90)
        rows.append({"sha256": f"{len(rows):064x}", "label": taxon, "split": split, "derived_path": str(path)})
    write_table(pd.DataFrame(rows).assign(dataset=folder.name, group="", taxon=""), table)
    return table


def cache(folder, size: int) -> tuple[dict, float]:
    """The pipeline's cache of the folder's images at `size` px, and the seconds it took."""
    start = time.perf_counter()
    built = imagecache.build(Path(folder) / "split.tsv", folder, size)
    return built, time.perf_counter() - start
