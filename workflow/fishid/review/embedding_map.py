"""A model's embedding map for the review app: the 2-D points of its evaluated photos
(t-SNE or UMAP, as the report's figure), computed once by rule embedding_map into
results/review/embedding_map/{model}.json, and the style (colour, shape) of each label."""

import json
import logging

import numpy as np
import pandas as pd

from fishid import steps

log = logging.getLogger(__name__)

# Kelly's colours of maximum contrast (white and black left out), the darker ones first: they
# stand out on the page's white.
PALETTE = [
    "#0067A5",
    "#F38400",
    "#008856",
    "#BE0032",
    "#875692",
    "#882D17",
    "#E68FAC",
    "#848482",
    "#8DB600",
    "#A1CAF1",
    "#F3C300",
    "#604E97",
    "#F99379",
    "#2B3D26",
    "#B3446C",
    "#C2B280",
    "#E25822",
    "#654522",
    "#DCD300",
    "#F6A600",
]
SHAPES = ["circle", "square", "triangle", "diamond"]
DISTINCT = len(PALETTE) * len(SHAPES)


def path_of(model: str) -> str:
    return f"results/review/embedding_map/{model}.json"


def compute(predictions: pd.DataFrame, metrics: dict, features: np.ndarray, method: str, seed: int = 0) -> dict:
    """The map of the photos the model's numbers come from: the figure data's features are
    theirs, row for row (fishid.evaluate.stage.figure_data)."""
    from fishid.report.figures import embedding_points

    evaluated_on = metrics.get("evaluated_on", "test")
    rows = predictions[predictions["split"] == evaluated_on]
    base = {"model": metrics.get("model", ""), "method": method, "evaluated_on": evaluated_on, "points": []}
    if len(rows) != len(features):
        raise ValueError(
            f"{len(features)} embeddings for {len(rows)} predictions on {evaluated_on}: "
            "the figure data and the predictions come from different runs of rule evaluate_model; rerun it"
        )
    if len(rows) < 3:
        return {**base, "note": f"{len(rows)} photos evaluated: too few for a map"}
    xy = embedding_points(features.astype(np.float64), method, seed)
    points = [
        {"sha256": s, "label": label, "predicted": p, "x": round(float(x), 4), "y": round(float(y), 4)}
        for (x, y), s, label, p in zip(xy, rows["sha256"], rows["label"], rows["predicted"])
    ]
    return {**base, "points": points}


def styles(labels) -> dict[str, dict]:
    """label -> {colour, shape}: PALETTE's colours first, then again with the next shape; past
    DISTINCT labels the pairs repeat (the legend says so, and each point names its label)."""
    return {
        label: {"colour": PALETTE[i % len(PALETTE)], "shape": SHAPES[(i // len(PALETTE)) % len(SHAPES)]}
        for i, label in enumerate(sorted(set(labels)))
    }


def laid_out(data: dict, size: int = 560, margin: int = 20) -> dict:
    """The map scaled to an SVG of `size` pixels, each point with its label's style, and the
    legend (label, style, count of points)."""
    points = data.get("points", [])
    if not points:
        return {"points": [], "legend": [], "repeats": False, "size": size, **data}
    xy = np.array([[p["x"], p["y"]] for p in points])
    xy = (xy - xy.min(axis=0)) / np.maximum(np.ptp(xy, axis=0), 1e-9) * (size - 2 * margin) + margin
    style = styles(p["label"] for p in points)
    counts = pd.Series([p["label"] for p in points]).value_counts()
    return {
        **data,
        "size": size,
        "points": [{**p, "x": float(x), "y": float(y), **style[p["label"]]} for p, (x, y) in zip(points, xy)],
        "legend": [{"label": label, **s, "count": int(counts[label])} for label, s in style.items()],
        "repeats": len(style) > DISTINCT,
    }


def write(data: dict, path) -> None:
    from fishid.tables import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


@steps.declare(
    "embedding-map",
    "a model's embedding map for the review app",
    steps.inp("predictions"),
    steps.inp("metrics"),
    steps.inp("figure_data", help="the evaluation's figure_data.npz (its features)"),
    steps.par("method", choices=("tsne", "umap"), help="report.embedding_map"),
    steps.par("seed", type="int", default=0),
    steps.out("out", key=""),
)
def embedding_map_step(predictions, metrics, figure_data, method, out, seed=0):
    """The `embedding-map` step (rule embedding_map)."""
    from fishid.tables import read_table

    with open(metrics) as handle:
        evaluated = json.load(handle)
    data = compute(read_table(predictions), evaluated, np.load(figure_data)["features"], method, seed)
    write(data, out)
    log.info("%s: %d points (%s)", evaluated.get("model", ""), len(data["points"]), method)
