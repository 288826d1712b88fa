"""Batched augmentation on uint8 tensors: the study's random resized crop and horizontal flip.

One affine grid per batch instead of one PIL call per image keeps data preparation a small
part of each epoch.
"""

import math

import torch
import torch.nn.functional as F


def random_resized_crop_flip(
    images: torch.Tensor, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), flip=True, generator=None
) -> torch.Tensor:
    """Float images in [0, 1], same size, each a random crop (area fraction in `scale`, aspect
    ratio in `ratio`, clipped to the image) resized back, flipped half the time."""
    n = images.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    # Crop centres keep the crop inside the image; coordinates are in [-1, 1].
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    sign = torch.ones(n)
    if flip:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float().div(255), grid, mode="bilinear", padding_mode="border", align_corners=False)
