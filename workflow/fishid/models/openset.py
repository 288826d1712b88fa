"""Open-set "other" by a confidence threshold (the study's proposed next step): a closed-set
model calls an image "other" when its top score is below a threshold chosen on validation
images only, never on the images it is evaluated on.
"""

import numpy as np


def apply_threshold(scores: np.ndarray, classes, threshold: float | None, other_label: str) -> np.ndarray:
    """Predicted labels: the top class, or `other_label` where the top score is below `threshold`."""
    predicted = np.asarray(classes, dtype=object)[scores.argmax(1)]
    if threshold is None:
        return predicted
    return np.where(scores.max(1) < threshold, other_label, predicted)


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes among `labels`: sklearn's balanced_accuracy_score, but
    without its warning whenever a class is predicted that no label has (routine here:
    "other", or a species absent from validation)."""
    # Imported here: sklearn takes over a second to import, which every training job would pay.
    from sklearn.metrics import recall_score

    return float(recall_score(labels, predicted, labels=np.unique(labels), average="macro"))


def choose_threshold(scores: np.ndarray, labels, classes, other_label: str, known_recall: float) -> dict:
    """The threshold and how it was chosen, from validation scores (N x known classes) and
    true labels (known classes, or `other_label` for images of no known class).

    With "other" images among them: the threshold with the best balanced accuracy over the
    known classes and "other" (ties: the lowest). Without: the highest threshold that still
    accepts `known_recall` of the known images (the usual rule when no unknowns are at hand)."""
    labels = np.asarray(labels, dtype=object)
    top = scores.max(1)
    if (labels == other_label).any() and (labels != other_label).any():
        candidates = np.unique(np.concatenate([[0.0], top, [1.0 + 1e-9]]))
        results = np.array(
            [balanced_accuracy(labels, apply_threshold(scores, classes, t, other_label)) for t in candidates]
        )
        # Ties, up to rounding of the mean of recalls: the lowest threshold.
        best = int(np.flatnonzero(results >= results.max() - 1e-9)[0])
        return {
            "threshold": float(candidates[best]),
            "rule": "best balanced accuracy of known species and other on validation",
            "validation_balanced_accuracy": float(results[best]),
        }
    threshold = float(np.quantile(top, 1 - known_recall, method="lower"))
    return {
        "threshold": threshold,
        "rule": f"keeps {known_recall:.0%} of known validation images (no 'other' images in validation)",
        "validation_known_accepted": float((top >= threshold).mean()),
    }
