"""A detector over a list of photos: the boxes table's rows (fishid.detect.boxes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fishid.detect.boxes import BOX_COLUMNS


def image_tensor(image: Image.Image) -> torch.Tensor:
    """3 x H x W, 0-1 floats: what torchvision's detection models take."""
    pixels = np.asarray(image.convert("RGB"), np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


@torch.no_grad()
def detect(
    model: torch.nn.Module,
    photos: Mapping[str, str],
    detector: str,
    original_sizes: Mapping[str, tuple[int, int]] | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Boxes rows of every photo of `photos` ({image: path}), in the photos' order and original
    pixels: the file may be a resized copy (the clean stage's derived one) of a photo of
    `original_sizes[image]`. A batch holds photos of one size only: torchvision's detectors pad a
    batch to its largest photo, which would make a photo's boxes depend on its batch mates (and
    the boxes cached by fishid.detect.found on the photos first looked at with it)."""
    model.eval()
    device = next(model.parameters()).device
    by_size = {}
    for image, path in photos.items():
        with Image.open(path) as photo:
            by_size.setdefault(photo.size, []).append(image)
    found_in = {}
    for names in by_size.values():
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            tensors = []
            for image in chunk:
                with Image.open(photos[image]) as photo:
                    tensors.append(image_tensor(photo))
            outputs = model([tensor.to(device) for tensor in tensors])
            for image, tensor, found in zip(chunk, tensors, outputs):
                found = {key: value.cpu() for key, value in found.items()}
                size = (original_sizes or {}).get(image)
                found_in[image] = box_rows(image, found, detector, tensor.shape[-1], tensor.shape[-2], size)
    return pd.DataFrame([row for image in photos for row in found_in[image]], columns=BOX_COLUMNS)


@torch.no_grad()
def detect_image(model: torch.nn.Module, image: Image.Image, name: str, detector: str) -> pd.DataFrame:
    """Boxes rows of one photo in memory (`fishid predict`'s), in its own pixels."""
    model.eval()
    tensor = image_tensor(image)
    found = model([tensor])[0]
    return pd.DataFrame(box_rows(name, found, detector, tensor.shape[-1], tensor.shape[-2]), columns=BOX_COLUMNS)


def box_rows(image: str, found: dict, detector: str, width: int, height: int, original_size=None) -> list[dict]:
    """One detection output ({"boxes", "scores"} in a `width` x `height` picture) as boxes rows."""
    sx, sy = (original_size[0] / width, original_size[1] / height) if original_size else (1.0, 1.0)
    boxes = found["boxes"].numpy().reshape(-1, 4) * np.array([sx, sy, sx, sy])
    scores = found["scores"].numpy()
    return [
        {"image": image, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": float(score), "detector": detector}
        for (x0, y0, x1, y1), score in zip(boxes.tolist(), scores)
    ]


def predictions_by_image(model, images: Sequence[torch.Tensor], batch_size: int = 16):
    """Per image tensor, [(box, score), ...] in its pixels: the form fishid.detect.boxes scores."""
    model.eval()
    found = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            for output in model(list(images[start : start + batch_size])):
                found.append(list(zip(output["boxes"].tolist(), output["scores"].tolist())))
    return found
