"""Label a folder of new photos with a trained model: species, scores, and 'other' below
the model's confidence threshold when it has one."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fishid import augment, clean, evaluate
from fishid.train import normalise, predict_logits

OTHER = "other"


def load_image(path, size: int) -> np.ndarray:
    return np.asarray(clean.decode(path).resize((size, size), Image.Resampling.BILINEAR))


def predict_folder(model_dir, folder, batch_size: int = 64) -> pd.DataFrame:
    """One row per file under `folder`: the prediction, or the reason it could not be read."""
    model_dir, folder = Path(model_dir), Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    meta = json.loads((model_dir / "meta.json").read_text())
    settings = meta["settings"]
    model, weights = evaluate.load_model(settings, model_dir / "weights.pt")
    classes = weights["classes"]
    threshold = weights.get("threshold", meta.get("threshold"))

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    rows, readable, pixels = [], [], []
    for path in files:
        try:
            pixels.append(load_image(path, settings["image_size"]))
            readable.append(len(rows))
            rows.append({"file": str(path.relative_to(folder)), "error": ""})
        except Exception as error:  # PIL raises many types for unreadable files; all mean "skip, say why"
            rows.append(
                {"file": str(path.relative_to(folder)), "error": f"unreadable: {type(error).__name__}: {error}"}
            )
    table = pd.DataFrame(rows, columns=["file", "error"])
    table["predicted"], table["top_score"] = "", np.nan
    for c in classes:
        table[f"score:{c}"] = np.nan
    if pixels:
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
        inputs = normalise(augment.to_float(images), weights["mean"], weights["std"])
        scores = torch.softmax(predict_logits(model, inputs, torch.device("cpu"), batch_size), dim=1).numpy()
        top = scores.max(axis=1)
        predicted = np.array(classes, dtype=object)[scores.argmax(axis=1)]
        if threshold is not None:
            predicted = np.where(top < threshold, OTHER, predicted)
        table.loc[readable, "predicted"] = predicted
        table.loc[readable, "top_score"] = top
        for i, c in enumerate(classes):
            table.loc[readable, f"score:{c}"] = scores[:, i]
    return table[["file", "predicted", "top_score", *[f"score:{c}" for c in classes], "error"]]
