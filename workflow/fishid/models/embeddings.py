"""Metric learning: the losses of siamese and triplet networks, and same/different decisions
by a distance threshold.

Both losses work on all pairs of a batch at once instead of on sampled pairs or triplets:
the siamese loss over every pair (Hadsell, Chopra & LeCun 2006), the triplet loss with the
hardest positive and hardest negative of each anchor (batch-hard, Hermans et al. 2017).
Embeddings are unit vectors, so distances lie in [0, 2].
"""

import numpy as np
import torch


def _pairs(embeddings: torch.Tensor, labels: torch.Tensor):
    distances = torch.cdist(embeddings.float(), embeddings.float())
    same = labels[:, None] == labels[None, :]
    return distances, same


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over all pairs i < j: d^2 for same-class pairs, max(0, margin - d)^2 otherwise."""
    distances, same = _pairs(embeddings, labels)
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    losses = torch.where(same, distances.pow(2), (margin - distances).clamp_min(0).pow(2))
    return losses[upper].mean()


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors that have a positive and a negative in the batch of
    max(0, d(hardest positive) - d(hardest negative) + margin)."""
    distances, same = _pairs(embeddings, labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(1)
    hardest_negative = distances.masked_fill(same, float("inf")).amin(1)
    valid = positive.any(1) & (~same).any(1)
    if not valid.any():
        return embeddings.sum() * 0.0
    return (hardest_positive - hardest_negative + margin)[valid].clamp_min(0).mean()


def nearest_neighbour_accuracy(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out 1-NN accuracy within a batch: how often an image's nearest other image
    has its label."""
    distances = torch.cdist(embeddings.float(), embeddings.float())
    distances.fill_diagonal_(float("inf"))
    return (labels[distances.argmin(1)] == labels).float().mean().item()


def pair_decisions(distances: np.ndarray, same: np.ndarray, threshold: float) -> dict:
    """Accuracy of calling a pair 'same' when its distance is below `threshold`: overall, on
    same-class pairs and on different-class pairs."""
    called_same = distances < threshold
    return {
        "threshold": threshold,
        "accuracy": float((called_same == same).mean()),
        "same_accuracy": float(called_same[same].mean()) if same.any() else float("nan"),
        "different_accuracy": float((~called_same[~same]).mean()) if (~same).any() else float("nan"),
    }


def choose_distance_threshold(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
    """The distance threshold that best separates same-class from different-class pairs of
    the given (validation) images: the mean of same- and different-class accuracy is highest
    there (different-class pairs outnumber the others), i.e. the ROC point of highest
    TPR - FPR (Youden's J); ties: the lowest threshold."""
    # Imported here: sklearn and scipy take over a second to import, which every training job
    # (this runs for siamese and triplet models only) would pay.
    from scipy.spatial.distance import pdist
    from sklearn.metrics import roc_curve

    embeddings, labels = embeddings.detach().cpu().double().numpy(), labels.cpu().numpy()
    distances = pdist(embeddings)
    same = (labels[:, None] == labels[None, :])[np.triu_indices(len(labels), k=1)]
    if same.all() or not same.any():
        # No ROC curve without both kinds of pair: call every pair the one kind there is.
        threshold = float(distances.max(initial=0.0)) + 1e-6 if same.all() else 0.0
        return pair_decisions(distances, same, threshold)
    fpr, tpr, thresholds = roc_curve(same, -distances, drop_intermediate=False)
    # Point i calls "same" every pair no farther than reach[i] (point 0: none), so tied
    # distances are never split.
    reach = -thresholds
    youden = tpr - fpr
    # Ties, up to rounding (2/3 - 0 against 1 - 1/3): the lowest threshold.
    i = int(np.flatnonzero(youden >= youden.max() - 1e-9)[0])
    if i == 0:
        threshold = 0.0
    elif i == len(reach) - 1:
        threshold = float(reach[-1]) + 1e-6
    else:
        threshold = float((reach[i] + reach[i + 1]) / 2)
    return pair_decisions(distances, same, threshold)
