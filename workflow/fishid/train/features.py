"""Feature caching for frozen encoders (TL, the CLIP linear probe, frozen siamese/triplet):
the encoder sees `feature_views` augmented views of every training image once, and the loop
trains only the new layers on those features, one view per image per epoch.

With `refit_batchnorm`, the encoder's batch norms re-estimate their statistics on the way, as
the study's loop ran its frozen network in training mode.
"""

import contextlib

import torch
from torch import nn

from fishid import runtime
from fishid.runtime import normalise
from fishid.train import augment
from fishid.train.data import Data

# Images per encoder pass. In training mode (refit_batchnorm) it is also the batch whose
# statistics normalise the features, so it changes them.
FEATURE_BATCH = 256


@torch.no_grad()
def extract_features(
    encoder, images, data: Data, settings, device, views: int, generator, train_mode=False
) -> torch.Tensor:
    """Encoder features of `views` random augmentations of every image: (views, N, dim).
    views=0 gives the plain images, as seen at evaluation."""
    encoder.train(train_mode)
    # Chunks of near-equal size: a last chunk of one image would stop a batch norm in training mode.
    n_chunks = max(1, -(-len(images) // FEATURE_BATCH))
    out = []
    for _ in range(max(views, 1)):
        # In training mode a batch's statistics shape its features: mixed batches, as the
        # study's shuffled loader gave, not runs of one species.
        order = torch.randperm(len(images), generator=generator) if train_mode else torch.arange(len(images))
        chunks = []
        for rows in order.tensor_split(n_chunks):
            chunk = images[rows]
            if views:
                chunk = augment.random_resized_crop_flip(
                    chunk, scale=settings["crop_scale"], flip=settings["flip"], generator=generator
                )
            else:
                chunk = runtime.to_float(chunk)
            with runtime.autocast(device):
                chunks.append(encoder(runtime.to_device(normalise(chunk, data.mean, data.std), device)).float().cpu())
        out.append(torch.cat(chunks)[torch.argsort(order)])
    encoder.eval()
    return torch.stack(out)


def batch_norms(encoder) -> list:
    return [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def refitting_batch_norm(encoder):
    """Within the block, the encoder's batch norms forget their statistics and average those
    of every batch they then see, in training mode; after it, they keep that average."""
    norms = batch_norms(encoder)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over all batches
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


def cached_features(encoder, data: Data, settings, device, plain_train=False):
    """(augmented train views, val features, plain train features or None), computed once.

    With `refit_batchnorm`, the training views go through the frozen encoder in training
    mode, as the study's loop ran its frozen network: each batch is normalised by its own
    statistics, and the running statistics re-estimated on them serve validation and
    evaluation. One pass does both."""
    generator = torch.Generator().manual_seed(settings["seed"] + 1)
    views = settings["feature_views"]
    # Encoders without batch norms (CLIP's transformers) stay in evaluation mode.
    refit = settings["refit_batchnorm"] and bool(batch_norms(encoder))
    with refitting_batch_norm(encoder) if refit else contextlib.nullcontext():
        train = extract_features(encoder, data.train_x, data, settings, device, views, generator, train_mode=refit)
    val = extract_features(encoder, data.val_x, data, settings, device, 0, generator)[0]
    plain = extract_features(encoder, data.train_x, data, settings, device, 0, generator)[0] if plain_train else None
    return train, val, plain


def view_batches(train_features, train_y, generator):
    """train_batch(indices) for the loop over cached features."""
    views = train_features.shape[0]

    def train_batch(indices):
        # Each epoch sees each image once, in one of its precomputed augmented views.
        view = torch.randint(views, (len(indices),), generator=generator)
        return train_features[view, indices], train_y[indices]

    return train_batch
