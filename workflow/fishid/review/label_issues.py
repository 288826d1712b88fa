"""Likely label errors: images whose own label a cheap model, trained without them, finds
unlikely (cleanlab's confident learning on out-of-sample predicted probabilities).

The model is a logistic regression on small colour thumbnails and hue histograms of the
derived copies: seconds on CPU for thousands of images, and independent of any trained
network, so the rule runs right after cleaning and flags images before anyone trains on them.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

THUMB = 12
HSV_BINS = (16, 6, 6)
FOLDS = 5
COMPONENTS = 64
ISSUE_COLUMNS = ["sha256", "label", "predicted", "self_confidence", "rank", "flagged", "derived_path"]


def features(image: Image.Image) -> np.ndarray:
    """A colour histogram (hue x saturation x value; the square root tames the background's
    share) and a thumbnail averaged with its mirror image (layout, whichever way the fish faces)."""
    rgb = image.convert("RGB")
    hsv = np.asarray(rgb.resize((48, 48), Image.Resampling.BILINEAR).convert("HSV"), dtype=np.float32) / 256
    histogram, _ = np.histogramdd(hsv.reshape(-1, 3), bins=HSV_BINS, range=[(0, 1)] * 3)
    thumb = np.asarray(rgb.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    symmetric = (thumb + thumb[:, ::-1]) / 2
    return np.concatenate([np.sqrt(histogram.ravel() / histogram.sum()), symmetric.ravel()])


def load_features(paths) -> np.ndarray:
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append(features(image))
    return np.stack(rows)


def out_of_sample_probabilities(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image's class probabilities from a model fitted on the other folds only."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(FOLDS, np.bincount(labels).min()))
    # A fold's training part bounds the components; strong regularisation, since most classes
    # hold a few dozen images.
    components = int(min(COMPONENTS, len(labels) * (folds - 1) // folds - 1, x.shape[1]))
    model = make_pipeline(StandardScaler(), PCA(components, random_state=seed), LogisticRegression(C=0.1, max_iter=500))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, x, labels, cv=splitter, method="predict_proba")


def rank_issues(shas, labels: list[str], probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Every image, least self-confident first; `flagged` where cleanlab finds its label an issue."""
    from cleanlab.filter import find_label_issues

    index = {c: i for i, c in enumerate(classes)}
    given = np.array([index[label] for label in labels])
    flagged = find_label_issues(given, probabilities, filter_by="prune_by_noise_rate")
    table = pd.DataFrame(
        {
            "sha256": list(shas),
            "label": labels,
            "predicted": [classes[i] for i in probabilities.argmax(axis=1)],
            "self_confidence": probabilities[np.arange(len(given)), given],
            "flagged": flagged,
        }
    )
    table = table.sort_values(["self_confidence", "sha256"], ignore_index=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table


def label_issues(clean: pd.DataFrame, derived_root, seed: int = 0) -> pd.DataFrame:
    """The kept, labelled images of the cleaning table, ranked by how unlikely their label is.
    Species with fewer than two kept images cannot be cross-validated and are left out."""
    kept = clean[(clean["kept"].astype(str) == "True") & (clean["taxon"] != "")]
    sizes = kept["taxon"].value_counts()
    kept = kept[kept["taxon"].isin(sizes[sizes >= 2].index)].sort_values("sha256", ignore_index=True)
    classes = sorted(set(kept["taxon"]))
    if len(classes) < 2:
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    x = load_features(Path(derived_root, p) for p in kept["derived_path"])
    labels = np.array([classes.index(t) for t in kept["taxon"]])
    probabilities = out_of_sample_probabilities(x, labels, seed)
    table = rank_issues(kept["sha256"], list(kept["taxon"]), probabilities, classes)
    table["derived_path"] = table["sha256"].map(dict(zip(kept["sha256"], kept["derived_path"])))
    return table[ISSUE_COLUMNS]
