"""Metric learning: the losses of siamese and triplet networks, and same/different decisions
by a distance threshold.

Both losses work on all pairs of a batch at once instead of on sampled pairs or triplets:
the siamese loss over every pair (Hadsell, Chopra & LeCun 2006), the triplet loss with the
hardest positive and hardest negative of each anchor (batch-hard, Hermans et al. 2017).
Embeddings are unit vectors, so distances lie in [0, 2].
"""

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


LOSSES = {"siamese": contrastive_loss, "triplet": batch_hard_triplet_loss}


def nearest_neighbour_accuracy(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out 1-NN accuracy within a batch: how often an image's nearest other image
    has its label."""
    distances = torch.cdist(embeddings.float(), embeddings.float())
    distances.fill_diagonal_(float("inf"))
    return (labels[distances.argmin(1)] == labels).float().mean().item()


def pair_decisions(distances: torch.Tensor, same: torch.Tensor, threshold: float) -> dict:
    """Accuracy of calling a pair 'same' when its distance is below `threshold`: overall, on
    same-class pairs and on different-class pairs."""
    called_same = distances < threshold
    return {
        "threshold": threshold,
        "accuracy": (called_same == same).float().mean().item(),
        "same_accuracy": called_same[same].float().mean().item() if same.any() else float("nan"),
        "different_accuracy": (~called_same[~same]).float().mean().item() if (~same).any() else float("nan"),
    }


def choose_distance_threshold(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
    """The distance threshold that best separates same-class from different-class pairs of
    the given (validation) images: the mean of same- and different-class accuracy is highest
    there (different-class pairs outnumber the others)."""
    distances, same = _pairs(embeddings, labels)
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    distances, same = distances[upper], same[upper]
    order = distances.argsort()
    distances, same = distances[order], same[order].float()
    # Calling the i closest pairs "same", for every i at once.
    same_called = torch.cat([torch.zeros(1), same.cumsum(0)])
    different_called = torch.arange(len(same) + 1) - same_called
    balanced = same_called / same.sum().clamp_min(1) + 1 - different_called / (1 - same).sum().clamp_min(1)
    i = int(balanced.argmax())
    bounds = torch.cat([distances[:1] * 0, distances, distances[-1:] + 1e-6])
    threshold = float((bounds[i] + bounds[i + 1]) / 2) if 0 < i < len(distances) else float(bounds[i + (i > 0)])
    return pair_decisions(distances, same.bool(), threshold)
