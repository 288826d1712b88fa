"""Data for the training benchmarks: the pipeline's synthetic clownfish photos, written as an
image folder (train/<species>/, val/<species>/, what torchvision's ImageFolder and the
study's scripts read) and as the pipeline's image cache of the same files; the study's
settings and its data loaders, which the benchmarks compare ours with."""

import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torchvision
from torchvision import datasets, transforms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from fishid import config  # noqa: E402
from fishid.sources import synthetic  # noqa: E402
from fishid.tables import write_table  # noqa: E402
from fishid.train import imagecache  # noqa: E402

# The study's training settings (SGD 0.001, momentum 0.9, StepLR 7/0.1, batch 16, ...), as
# the pipeline's config holds them.
STUDY = config.load(ROOT / "config" / "config.yaml")["training_defaults"]

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


def study_loaders(folder, size: int, mean, std) -> dict:
    """The study's data pipeline: ImageFolder whose PIL transforms decode, random-resized-crop,
    flip and normalise every photo every epoch; validation resized, in batches of 16 too."""
    normalize = transforms.Normalize(mean.tolist(), std.tolist())
    augmented = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=tuple(STUDY["crop_scale"])),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    plain = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), normalize])
    train_set = datasets.ImageFolder(Path(folder) / "train", augmented)
    val_set = datasets.ImageFolder(Path(folder) / "val", plain)
    return {
        "train": torch.utils.data.DataLoader(train_set, batch_size=STUDY["batch_size"], shuffle=True),
        "val": torch.utils.data.DataLoader(val_set, batch_size=STUDY["batch_size"]),
    }


def setup_record(images: dict, threads: int, load_before: float) -> dict:
    """What a benchmark's figures depend on besides the code: data, threads, load, machine."""
    return {
        "n_train": images["split"].count("train"),
        "n_val": images["split"].count("val"),
        "threads": threads,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
