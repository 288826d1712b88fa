"""Classification metrics on plain arrays: what the report's numbers are made of.

scikit-learn computes the scores and scipy the distances; what is left here are the
study's own conventions (which classes count, bins, thresholds), each checked in tests
against small cases worked by hand.
"""

import numpy as np
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score


def confusion(labels, predicted, classes) -> np.ndarray:
    """Rows are true classes, columns predicted, in `classes` order (as
    sklearn.metrics.confusion_matrix(labels, predicted, labels=classes), checked in tests).

    Counted here because the bootstrap calls this thousands of times a model, and
    scikit-learn's input checks cost milliseconds a call. Unlike scikit-learn's, a label
    outside `classes` is an error, never silently left out."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for true, pred in zip(labels, predicted):
        matrix[index[true], index[pred]] += 1
    return matrix


def precision_recall_f1(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per class; a class never predicted (or never present) gets 0 rather than NaN."""
    matrix = np.asarray(matrix)
    # scikit-learn scores labels, not matrices: one sample per cell, weighted by its count.
    true, predicted = np.indices(matrix.shape).reshape(2, -1)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=np.arange(len(matrix)), sample_weight=matrix.ravel(), average=None, zero_division=0.0
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.round().astype(int)}


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the classes present: the study's data are very unbalanced. The same
    as sklearn.metrics.balanced_accuracy_score (checked in tests), from the matrix, since
    the bootstrap calls it thousands of times."""
    matrix = np.asarray(matrix, dtype=float)
    support = matrix.sum(axis=1)
    present = support > 0
    return float((np.diag(matrix)[present] / support[present]).mean())


def bootstrap_interval(values, statistic=np.mean, n_resamples=2000, level=0.95, seed=0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over resamples of the rows of `values`."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_resamples, len(values)))
    stats = np.array([statistic(values[p]) for p in picks])
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def calibration_bins(confidence, correct, n_bins=10) -> list[dict]:
    """Reliability diagram data: per equal-width confidence bin, its count, mean confidence and accuracy."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    # Bins are (low, high]; a confidence of exactly 0 falls in the first.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = which == b
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else None,
                "accuracy": float(correct[members].mean()) if members.any() else None,
            }
        )
    return bins


def expected_calibration_error(bins: list[dict]) -> float:
    """Bin-size weighted mean |accuracy - confidence|."""
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]) / total)


def auroc(scores, positive) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative (ties count half); NaN without both positives and negatives."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, dtype=float)))


def open_set_curve(top_score, predicted, labels, other_label: str, thresholds) -> list[dict]:
    """For each threshold: an image whose top score is below it is called `other_label`;
    accuracy on the known species, on the 'other' images, and overall."""
    top_score, predicted, labels = np.asarray(top_score), np.asarray(predicted), np.asarray(labels)
    is_other = labels == other_label
    rows = []
    for threshold in thresholds:
        called = np.where(top_score < threshold, other_label, predicted)
        correct = called == labels
        rows.append(
            {
                "threshold": float(threshold),
                "known_accuracy": float(correct[~is_other].mean()) if (~is_other).any() else None,
                "other_accuracy": float(correct[is_other].mean()) if is_other.any() else None,
                "accuracy": float(correct.mean()),
            }
        )
    return rows


def pair_distance_accuracy(embeddings, labels, thresholds) -> list[dict]:
    """Same/different decisions by Euclidean distance over all pairs: for each threshold the
    accuracy on all pairs, on same-class pairs and on different-class pairs."""
    embeddings, labels = np.asarray(embeddings, dtype=float), np.asarray(labels)
    # pdist lists pairs i < j in the row-major order of triu_indices.
    distance = pdist(embeddings)
    same = (labels[:, None] == labels[None, :])[np.triu_indices(len(labels), k=1)]
    rows = []
    for threshold in thresholds:
        says_same = distance < threshold
        rows.append(
            {
                "threshold": float(threshold),
                "accuracy": float((says_same == same).mean()),
                "same_accuracy": float(says_same[same].mean()) if same.any() else None,
                "different_accuracy": float((~says_same[~same]).mean()) if (~same).any() else None,
            }
        )
    return rows


def knn_predict(train_embeddings, train_labels, query_embeddings, k: int):
    """Majority label of the k nearest training embeddings (ties: the nearest among the tied)."""
    train_embeddings = np.asarray(train_embeddings, dtype=float)
    train_labels = np.asarray(train_labels)
    distance = cdist(np.asarray(query_embeddings, dtype=float), train_embeddings)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    predictions = []
    for row in nearest:
        votes = {}
        for rank, i in enumerate(row):
            count, best_rank = votes.get(train_labels[i], (0, rank))
            votes[train_labels[i]] = (count + 1, best_rank)
        predictions.append(max(votes.items(), key=lambda item: (item[1][0], -item[1][1]))[0])
    return np.array(predictions)
