"""Label a folder of new photos with a trained model: species, scores, and the model's own
"other" label below its confidence threshold when it has one.

Each photo is decoded and derived exactly as the cleaning stage made the model's training
and evaluation images (fishid.clean.stage.derive_photo), then scored by the same code evaluation
uses (fishid.evaluate.inference): the same photo gets the same scores from `predict` and `evaluate`.
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fishid import steps
from fishid.clean import stage as clean
from fishid.detect import stage as detect
from fishid.evaluate import inference
from fishid.tables import readable
from fishid.train import imagecache

log = logging.getLogger(__name__)


def load_image(path, weights: dict, size: int, cut=None) -> np.ndarray:
    """A photo as the model's inputs were made: the derived copy, cut to its fish by `cut` for
    a model on crops, then the cache's resize. (Weights from before the derived settings were
    recorded: the photo decoded as is.)"""
    preprocess = weights.get("preprocess") or {}
    image = clean.derive_photo(path, preprocess) if preprocess else clean.decode(path)
    if cut is not None:
        image = cut(image)
    return imagecache.square(image, size)


def predict_folder(model_dir, folder, batch_size: int = 64) -> pd.DataFrame:
    """One row per file under `folder`: the prediction, or the reason it could not be read."""
    model_dir, folder = Path(model_dir), Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    settings = json.loads((model_dir / "meta.json").read_text())["settings"]
    model, weights = inference.load_model(settings, model_dir / "weights.pt")
    classes = weights["classes"]
    # results/models/NAME: the run's detector is under results/detect.
    cut = detect.cropper(model_dir.parent.parent, settings["crop"]) if "crop" in settings else None

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    rows, decoded, pixels = [], [], []
    for path in files:
        try:
            pixels.append(load_image(path, weights, settings["image_size"], cut))
            decoded.append(len(rows))
            rows.append({"file": readable(str(path.relative_to(folder))), "error": ""})
        except Exception as error:  # PIL raises many types for unreadable files; all mean "skip, say why"
            rows.append(
                {
                    "file": readable(str(path.relative_to(folder))),
                    "error": readable(f"unreadable: {type(error).__name__}: {error}"),
                }
            )
    table = pd.DataFrame(rows, columns=["file", "error"])
    table["predicted"], table["top_score"] = "", np.nan
    for c in classes:
        table[f"score:{c}"] = np.nan
    if pixels:
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
        scores = inference.scores_of(model, weights, images, batch_size=batch_size)
        table.loc[decoded, "predicted"] = inference.labels_of(scores, weights)
        table.loc[decoded, "top_score"] = scores.max(axis=1)
        for i, c in enumerate(classes):
            table.loc[decoded, f"score:{c}"] = scores[:, i]
    return table[["file", "predicted", "top_score", *[f"score:{c}" for c in classes], "error"]]


@steps.declare(
    "predict",
    "label a folder of photos with a trained model",
    steps.Option("model", "wildcards", help="a model name from the configuration"),
    steps.Option("folder", "input", positional=True, help="folder of photos (searched recursively)"),
    steps.Option("results", "params", default="results", help="the pipeline's results folder"),
    steps.out("out", key="", default=None, help="CSV to write (default: standard output)"),
)
def predict_step(model, folder, results="results", out=None):
    """`fishid predict` and rule predict_folder: a CSV of labels, to `out` or standard output."""
    from fishid.tables import table_text, write_text_atomic

    table = predict_folder(Path(results) / "models" / model, folder)
    text = table_text(table, sep=",", float_format="%.6f")
    if out:
        write_text_atomic(out, text)
    else:
        sys.stdout.write(text)
    unreadable = table[table["error"] != ""]
    log.info("%d images labelled, %d unreadable", len(table) - len(unreadable), len(unreadable))
