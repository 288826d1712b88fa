"""Evaluation: predictions on held-out images, accuracy overall and per species, confusion."""

import json

import numpy as np
import pandas as pd
import torch

from fishid import augment, imagecache, models
from fishid.train import normalise, predict_logits


def load_model(settings: dict, weights_path):
    weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = models.build(settings, len(weights["classes"]))
    model.load_state_dict(weights["model"])
    return model, weights


def predict(settings: dict, weights_path, cache: dict, role: str) -> pd.DataFrame:
    model, weights = load_model(settings, weights_path)
    images, labels = imagecache.subset(cache, role)
    inputs = normalise(augment.to_float(images), weights["mean"], weights["std"])
    scores = torch.softmax(predict_logits(model, inputs, torch.device("cpu")), dim=1).numpy()
    classes = weights["classes"]
    shas = [s for s, r in zip(cache["sha256"], cache["split"]) if r == role]
    table = pd.DataFrame(
        {
            "sha256": shas,
            "split": role,
            "label": [classes[i] for i in labels.tolist()],
            "predicted": [classes[i] for i in scores.argmax(1)],
        }
    )
    for i, name in enumerate(classes):
        table[f"score:{name}"] = scores[:, i].round(6)
    return table


def confusion(labels, predicted, classes) -> np.ndarray:
    """Rows are true classes, columns predicted, in `classes` order."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for true, pred in zip(labels, predicted):
        matrix[index[true], index[pred]] += 1
    return matrix


def metrics(predictions: pd.DataFrame, classes, train_labels) -> dict:
    correct = predictions["label"] == predictions["predicted"]
    per_species = {
        c: {
            "n": int((predictions["label"] == c).sum()),
            "correct": int(correct[predictions["label"] == c].sum()),
        }
        for c in classes
    }
    for row in per_species.values():
        row["accuracy"] = row["correct"] / row["n"] if row["n"] else None
    # Predicting the most common training label for everything: what any model must beat.
    majority = pd.Series(train_labels).value_counts().idxmax()
    return {
        "n": len(predictions),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "majority_label": majority,
        "majority_baseline": float((predictions["label"] == majority).mean()),
        "per_species": per_species,
        "classes": list(classes),
        "confusion": confusion(predictions["label"], predictions["predicted"], classes).tolist(),
    }


def run(settings: dict, model_name: str, weights_path, cache_path, predictions_path, metrics_path) -> dict:
    cache = imagecache.load(cache_path)
    roles = [r for r in ("val", "test") if r in cache["split"]]
    predictions = pd.concat([predict(settings, weights_path, cache, role) for role in roles])
    predictions.insert(0, "model", model_name)
    predictions.to_csv(predictions_path, sep="\t", index=False)
    # Reported numbers come from test where the dataset has one, from validation otherwise.
    reported = "test" if "test" in roles else "val"
    train_labels = [cache["classes"][i] for i in imagecache.subset(cache, "train")[1].tolist()]
    result = {
        "model": model_name,
        "evaluated_on": reported,
        **metrics(predictions[predictions["split"] == reported], cache["classes"], train_labels),
    }
    with open(metrics_path, "w") as handle:
        json.dump(result, handle, indent=2)
    return result
