"""What the variants share on top of a frozen encoder."""

import torch
from torch import nn


class FeatureScaler(nn.Module):
    """Standardises features by statistics of the training set's features, so that a head on
    a frozen encoder learns at the study's learning rate whatever the encoder's scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: torch.Tensor) -> "FeatureScaler":
        # A feature constant over the training set (a ReLU channel no training image lights)
        # is only centred: divided by its near-zero spread, the first image that does light it
        # gave values of 1e5 and more, which overflow float16 on CUDA (a siamese network's
        # embeddings came out NaN there).
        std = features.std(0)
        self.mean.copy_(features.mean(0))
        self.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))
        return self

    def forward(self, x):
        return (x - self.mean) / self.std
