"""What a model trains on: the image cache's train and val images as tensors, where they live
while batches are cut, and how a batch of images becomes a network's input (a fresh random
crop and flip in training, the whole image at validation)."""

import logging
from dataclasses import dataclass, replace

import torch

from fishid.runtime import Normalised, normalise
from fishid.train import augment, imagecache

log = logging.getLogger(__name__)


@dataclass
class Data:
    """What a model trains on: uint8 images and label indices into `classes`, and the
    channel statistics its inputs are normalised by."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list
    mean: torch.Tensor
    std: torch.Tensor


def training_data(cache: dict, exclude_label: str = "") -> Data:
    """The cache's train and val images (imagecache.Rows: read where a batch takes them); without
    `exclude_label`'s images when it is given (a threshold open-set model never sees "other")."""
    classes = list(cache["classes"])
    drop = classes.index(exclude_label) if exclude_label in classes else None
    # Label indices into `classes`, which lacks the dropped label.
    remap = torch.tensor([i - (drop is not None and i > drop) for i in range(len(classes))])
    if drop is not None:
        classes.remove(exclude_label)
    train, val = (imagecache.role_rows(cache, role, drop) for role in ("train", "val"))
    return Data(
        imagecache.Rows(cache["images"], train),
        remap[cache["labels"][train]],
        imagecache.Rows(cache["images"], val),
        remap[cache["labels"][val]],
        classes,
        cache["mean"],
        cache["std"],
    )


def on_device(data: Data, device: torch.device, share: float = 0.25) -> Data:
    """`data` with its images on a CUDA `device` where they take under `share` of its free
    memory: batches are then cut and flipped there, not on the CPU and copied one by one. On an
    H200, ResNet-18 at 224 px and batch 16 spent 37 % of each epoch getting batches from host
    memory and 8 % from the GPU's (1,060 against 1,807 photos/s, bench/results/gpu_epoch.md)."""
    if device.type != "cuda":
        return data
    size = data.train_x.nbytes + data.val_x.nbytes
    free, _ = torch.cuda.mem_get_info(device)
    if size > share * free:
        log.info("images (%.1f GB) stay in host memory: over %.0f %% of the GPU's free memory", size / 1e9, share * 100)
        return data
    return replace(data, train_x=data.train_x.to(device), val_x=data.val_x.to(device))


def augmented_batches(images, labels, mean, std, settings, generator):
    """train_batch(indices) for the loop: a fresh random crop and flip of each image."""

    def train_batch(indices):
        crops = augment.random_resized_crop_flip(
            images[indices], scale=settings["crop_scale"], flip=settings["flip"], generator=generator
        )
        return normalise(crops, mean, std), labels[indices]

    return train_batch


def plain_inputs(images, data: Data) -> Normalised:
    """The whole images, normalised: what validation and evaluation see."""
    return Normalised(images, data.mean, data.std)
