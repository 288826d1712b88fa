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
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))
        return self

    def forward(self, x):
        return (x - self.mean) / self.std
