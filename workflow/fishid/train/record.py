"""The record of a training run, written in one place for every entry point (a model, a
pre-trained ResNet-18 backbone, a pre-trained CLIP): the weights file (the state, the classes,
the normalisation, how cleaning derived the images, and what the run adds), the history and
meta.json (the settings, the data, how long it took, where, and with which code and
libraries)."""

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn

import fishid
from fishid.train.data import Data
from fishid.train.loop import left_majority_epoch, majority_share


@dataclass
class Run:
    """A finished training run: what its records are made of."""

    model: nn.Module
    history: pd.DataFrame
    settings: dict
    data: Data
    cache: dict
    device: torch.device
    start: float  # time.perf_counter() when the run began
    weights: dict = field(default_factory=dict)  # what the weights file adds (architecture, thresholds)
    facts: dict = field(default_factory=dict)  # what meta.json adds (the recipe's facts)


def records(run: Run) -> tuple[dict, pd.DataFrame, dict]:
    """(weights, history, meta) of `run`: what `save` writes."""
    return weights_record(run), run.history, run_record(run)


def weights_record(run: Run) -> dict:
    """What a weights file holds: the state, the classes and the normalisation, how cleaning
    derived the images (fishid predict makes the same of a new photo), and the run's own."""
    state = {k: v.cpu().contiguous() for k, v in run.model.state_dict().items()}
    data, preprocess = run.data, run.cache.get("preprocess", {})
    return {
        "model": state,
        "classes": data.classes,
        "mean": data.mean,
        "std": data.std,
        "preprocess": preprocess,
        **run.weights,
    }


def run_record(run: Run) -> dict:
    """meta.json: the run's settings, data and facts, how long it took, where, and with which
    code and libraries."""
    data, settings, device = run.data, run.settings, run.device
    share = majority_share(data.train_y)
    return {
        "settings": settings,
        "classes": data.classes,
        "n_train": len(data.train_y),
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "n_val": len(data.val_y),
        # A network that predicts the largest class for every image scores its share.
        "majority_share": share,
        "left_majority_epoch": left_majority_epoch(run.history, share, len(data.train_y)),
        **run.facts,
        "split_crc32": run.cache["split_crc32"],
        "mixed_precision": "float16" if device.type == "cuda" else "bfloat16" if settings["cpu_bfloat16"] else "no",
        "dataset_table_sha256": run.cache.get("split_sha256", ""),
        "seconds": round(time.perf_counter() - run.start, 2),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "code_version": code_version(),
        "versions": library_versions(),
    }


def code_version() -> str:
    """The git commit of the package's checkout (with '+dirty' for local changes), if any."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if status.strip() else "")


def library_versions() -> dict:
    versions = {
        "fishid": fishid.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }
    # Only where a CLIP model used it: importing open_clip takes seconds.
    if "open_clip" in sys.modules:
        versions["open_clip"] = sys.modules["open_clip"].__version__
    return versions


def save(weights, history, meta, weights_path, history_path, meta_path) -> None:
    torch.save(weights, weights_path)
    history.to_csv(history_path, index=False)
    with open(meta_path, "w") as handle:
        json.dump(meta, handle, indent=2)
