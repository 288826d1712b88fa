"""Tiny image sets for training tests: 'species' told apart by colour, with noise, easy
enough that learning must show in a few epochs."""

import hashlib

import numpy as np
import pandas as pd
from PIL import Image

from fishid.tables import write_table
from fishid.train import imagecache

COLOURS = {"red fish": (200, 40, 30), "blue fish": (30, 60, 200), "other": (40, 190, 40)}


def toy_cache(folder, labels=("red fish", "blue fish"), per_label=30, n_val=6, n_test=0, size=32, seed=0):
    """Build, save and reload a cache; the first `n_val` images of each label are validation,
    the next `n_test` test, the rest training."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in labels:
        for i in range(per_label):
            pixels = np.clip(rng.normal(COLOURS[label], 40, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            rel = f"{label.replace(' ', '_')}{i}.jpg"
            Image.fromarray(pixels).save(folder / rel)
            split = "val" if i < n_val else "test" if i < n_val + n_test else "train"
            rows.append(
                {
                    "sha256": hashlib.sha256(rel.encode()).hexdigest(),
                    "label": label,
                    "split": split,
                    "derived_path": rel,
                }
            )
    write_table(pd.DataFrame(rows).assign(dataset="toy", group="", taxon=""), folder / "split.tsv")
    imagecache.save(imagecache.build(folder / "split.tsv", folder, size), folder / "cache.pt")
    return imagecache.load(folder / "cache.pt")


SETTINGS = {
    "arch": "ri",
    "dataset": "toy",
    "image_size": 32,
    "epochs": 6,
    "batch_size": 8,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "step_size": 7,
    "gamma": 0.1,
    "crop_scale": [0.5, 1.0],
    "flip": True,
    "seed": 0,
    "feature_views": 2,
    "channels": [4, 8, 8],
    "hidden": [16, 8],
}

# An open_clip model config small enough to build and train in a test.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
