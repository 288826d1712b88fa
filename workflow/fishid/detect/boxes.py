"""The boxes table (results/detect/boxes.tsv) and how boxes are scored against the true ones.

One row per box: `image` (the photo's SHA-256, as the clean table names it), x0, y0, x1, y1 in
the photo's original pixels (x0, y0 its top-left corner, x1, y1 one past its last column and
row, as PIL crops and torchvision boxes are), `score` (the detector's confidence, 0-1) and
`detector` (its name). A photo without a box has no row: the crops stage names those photos.

Scores: average precision at IoU 0.5 for the one class "fish", interpolated at every recall
point (Pascal VOC from 2010, COCO's AP50 without its 101-point sampling), and the mean IoU of
each true box with the predicted box that fits it best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fishid.tables import read_table, write_table

BOX_COLUMNS = ["image", "x0", "y0", "x1", "y1", "score", "detector"]
COORDINATES = ["x0", "y0", "x1", "y1"]

Box = Sequence[float]
# Per image: its true boxes, or its predicted boxes with their scores.
Truth = Mapping[str, Sequence[Box]]
Predictions = Mapping[str, Sequence[tuple[Box, float]]]


def read_boxes(path) -> pd.DataFrame:
    """The boxes table, coordinates and scores as floats."""
    table = read_table(path, BOX_COLUMNS)[BOX_COLUMNS]
    return table.astype({column: float for column in [*COORDINATES, "score"]})


def write_boxes(table: pd.DataFrame, path) -> None:
    """Sorted by image, then best score first, so that the same boxes always give the same file."""
    table = table.sort_values(["image", "score"], ascending=[True, False], kind="stable")
    table = table.round({column: 2 for column in COORDINATES} | {"score": 4})
    write_table(table, path, BOX_COLUMNS)


def predictions_of(table: pd.DataFrame) -> dict[str, list[tuple[tuple[float, ...], float]]]:
    """A boxes table as {image: [(box, score), ...]}."""
    found: dict[str, list] = {}
    for row in table.itertuples(index=False):
        found.setdefault(row.image, []).append(((row.x0, row.y0, row.x1, row.y1), float(row.score)))
    return found


def area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_matrix(first: Sequence[Box], second: Sequence[Box]) -> np.ndarray:
    """IoU of every box of `first` (rows) with every box of `second` (columns)."""
    a = np.asarray(first, float).reshape(-1, 4)
    b = np.asarray(second, float).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    overlap = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = area(a)[:, None] + area(b)[None, :] - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def iou(first: Box, second: Box) -> float:
    return float(iou_matrix([first], [second])[0, 0])


def matched(truth: Truth, predictions: Predictions, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, whether each is a true positive) of every prediction, best score first, and the
    number of true boxes. As Pascal VOC's devkit matches: each prediction in turn takes the true
    box it overlaps most; it is a hit if that overlap reaches `threshold` and no better-scored
    prediction took the box already (a second box on one fish is a false positive)."""
    ranked = [
        (score, image, tuple(box)) for image, found in predictions.items() for box, score in found if image in truth
    ]
    # Stable on ties: equal scores keep the images' and boxes' given order.
    ranked.sort(key=lambda item: -item[0])
    taken = {image: np.zeros(len(boxes), bool) for image, boxes in truth.items()}
    hits = np.zeros(len(ranked), bool)
    for i, (_, image, box) in enumerate(ranked):
        if not len(truth[image]):
            continue
        overlaps = iou_matrix([box], truth[image])[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= threshold and not taken[image][best]:
            taken[image][best] = True
            hits[i] = True
    scores = np.array([score for score, _, _ in ranked], float)
    return scores, hits, sum(len(boxes) for boxes in truth.values())


def average_precision(truth: Truth, predictions: Predictions, threshold: float = 0.5) -> float:
    """Area under the precision-recall curve whose precision at each recall is the best precision
    at that recall or beyond (all-point interpolation). Only images in `truth` count: an image
    without fish is `image: []` there, and its boxes are false positives. NaN without true boxes."""
    _, hits, positives = matched(truth, predictions, threshold)
    if positives == 0:
        return float("nan")
    true_positives = np.cumsum(hits)
    recall = true_positives / positives
    precision = true_positives / np.arange(1, len(hits) + 1)
    # The envelope: from the right, the highest precision seen so far.
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def mean_best_iou(truth: Truth, predictions: Predictions, min_score: float = 0.0) -> float:
    """The mean, over true boxes, of their IoU with the predicted box of their image (of score at
    least `min_score`) that overlaps them most; 0 for a fish no box touches. NaN without true boxes."""
    best = []
    for image, boxes in truth.items():
        found = [box for box, score in predictions.get(image, []) if score >= min_score]
        if not len(boxes):
            continue
        if not found:
            best.extend([0.0] * len(boxes))
            continue
        best.extend(iou_matrix(boxes, found).max(axis=1).tolist())
    return float(np.mean(best)) if best else float("nan")
