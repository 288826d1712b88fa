"""How each kind of variant is trained: a recipe builds the network and hands it to the loop
(fishid.train.loop) with what it trains on.

Full networks (RI, ResNet-18 from scratch or fine-tuned, unfrozen embedding networks, the
demo's CLIP pre-training) see a fresh random crop and flip of every image each epoch.
Frozen encoders (TL, CLIP linear probe, frozen siamese/triplet) compute their features once
(fishid.train.features) and train only the new layers on them.

Which recipe trains which variant is said by the variant's entry in fishid.variants; RECIPES
maps the recipe names to the functions here. A recipe is (variant, settings, data, backbone,
device) -> (trained model, history, what the model's meta adds).
"""

import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fishid import runtime
from fishid.models import clip as clip_models
from fishid.models import embeddings
from fishid.models import registry as models
from fishid.models.heads import FeatureScaler
from fishid.runtime import predict_logits
from fishid.train.data import Data, augmented_batches, plain_inputs
from fishid.train.features import cached_features, extract_features, view_batches
from fishid.train.loop import (
    argmax_accuracy,
    classification_validator,
    evaluate,
    majority_share,
    train_epochs,
    train_loop,
)


def fit_network(model, data: Data, settings, device, loss_fn=F.cross_entropy) -> pd.DataFrame:
    """Train every trainable parameter of `model` on freshly augmented training images."""
    majority = majority_share(data.train_y)
    return train_loop(model, *network_inputs(data, settings, device), settings, device, loss_fn, majority=majority)


def network_inputs(data: Data, settings, device):
    """(train_batch, n_train, validate) for training a whole network on augmented images."""
    generator = torch.Generator().manual_seed(settings["seed"] + 1)
    train_batch = augmented_batches(data.train_x, data.train_y, data.mean, data.std, settings, generator)
    validate = classification_validator(plain_inputs(data.val_x, data), data.val_y, device)
    return train_batch, len(data.train_y), validate


def network_epochs(model, data: Data, settings, device, loss_fn=F.cross_entropy):
    """fit_network one epoch at a time (a generator of history rows)."""
    return train_epochs(model, *network_inputs(data, settings, device), settings, device, loss_fn, argmax_accuracy)


def fit_head(encoder, head, data: Data, settings, device):
    """Train `head` on the frozen `encoder`'s cached features; return the history."""
    train_features, val_features, _ = cached_features(encoder, data, settings, device)
    for module in head.modules():
        if isinstance(module, FeatureScaler):
            module.fit(train_features.flatten(0, 1))
    head.to(device)
    generator = torch.Generator().manual_seed(settings["seed"] + 2)
    train_batch = view_batches(train_features, data.train_y, generator)
    validate = classification_validator(val_features, data.val_y, device)
    return train_loop(
        head, train_batch, len(data.train_y), validate, settings, device, majority=majority_share(data.train_y)
    )


def fit_embedding(model: models.EmbeddingClassifier, loss, data: Data, settings, device):
    """Siamese (contrastive) or triplet (batch-hard) training of the embedding; then the
    training images become the k-NN gallery. Validation accuracy is k-NN accuracy of the
    validation images against that gallery."""
    margin = settings["margin"]

    def loss_fn(outputs, labels):
        return loss(outputs, labels, margin)

    def batch_accuracy(outputs, labels):
        return embeddings.nearest_neighbour_accuracy(outputs, labels)

    if settings["freeze_backbone"]:
        train_features, val_features, plain_features = cached_features(
            model.encoder, data, settings, device, plain_train=True
        )
        model.projector[0].fit(train_features.flatten(0, 1))
        model.to(device)
        generator = torch.Generator().manual_seed(settings["seed"] + 2)
        train_batch = view_batches(train_features, data.train_y, generator)
        trainable = EmbeddingProjection(model)

        def embed_val_and_gallery():
            return predict_logits(trainable, val_features, device), predict_logits(trainable, plain_features, device)

    else:
        # Standardise by the untrained encoder's features; the encoder then learns on.
        model.projector[0].fit(extract_features(model.encoder, data.train_x, data, settings, device, 0, None)[0].cpu())
        model = runtime.prepare(model, device)
        generator = torch.Generator().manual_seed(settings["seed"] + 1)
        train_batch = augmented_batches(data.train_x, data.train_y, data.mean, data.std, settings, generator)
        trainable = EmbeddingOfImages(model)
        val_inputs, gallery_inputs = plain_inputs(data.val_x, data), plain_inputs(data.train_x, data)

        def embed_val_and_gallery():
            return predict_logits(trainable, val_inputs, device), predict_logits(trainable, gallery_inputs, device)

    def validate(_):
        val, gallery = embed_val_and_gallery()
        model.knn.set_gallery(gallery, data.train_y)
        scores = model.knn(val.to(device)).cpu()
        return loss(val, data.val_y, margin).item(), argmax_accuracy(scores, data.val_y)

    history = train_loop(trainable, train_batch, len(data.train_y), validate, settings, device, loss_fn, batch_accuracy)
    val, gallery = embed_val_and_gallery()
    model.knn.set_gallery(gallery, data.train_y)
    return model, history, embeddings.choose_distance_threshold(val, data.val_y)


class EmbeddingProjection(nn.Module):
    """The trainable part of a frozen-encoder embedding network: features -> embedding."""

    def __init__(self, model: models.EmbeddingClassifier):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model.project(features)


class EmbeddingOfImages(nn.Module):
    def __init__(self, model: models.EmbeddingClassifier):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.embed(images)


def zero_shot_history(model, data: Data, device) -> pd.DataFrame:
    """A zero-shot model is not trained: one row (epoch 0) of its loss and accuracy."""
    start = time.perf_counter()
    row = {"epoch": 0}
    for role, images, labels in (("train", data.train_x, data.train_y), ("val", data.val_x, data.val_y)):
        row[f"{role}_loss"], row[f"{role}_acc"] = evaluate(model, plain_inputs(images, data), labels, device)
    return pd.DataFrame([{**row, "lr": 0.0, "seconds": time.perf_counter() - start, "data_seconds": 0.0}])


def train_network(variant, settings, data: Data, backbone, device):
    """RI, ResNet-18 from scratch or fine-tuned: every layer trained."""
    model = runtime.prepare(variant.build(settings, len(data.classes), backbone=backbone), device)
    return model, fit_network(model, data, settings, device), {}


def train_frozen_head(variant, settings, data: Data, backbone, device):
    """TL: a new final layer on the frozen backbone's features."""
    model = variant.build(settings, len(data.classes), backbone=backbone.requires_grad_(False))
    # The new layer learns on what the rest of the network makes of each image.
    head, model.fc = model.fc, nn.Identity()
    history = fit_head(runtime.prepare(model, device), head, data, settings, device)
    model.fc = head
    return model, history, {"feature_views": settings["feature_views"]}


def train_embedding(variant, settings, data: Data, backbone, device):
    """Siamese or triplet network on a frozen or (freeze_backbone: false) trained encoder."""
    encoder = backbone.requires_grad_(not settings["freeze_backbone"])
    model = variant.build(settings, len(data.classes), backbone=encoder)
    model, history, pairs = fit_embedding(model.to(device), variant.loss, data, settings, device)
    extra = {"distance_threshold": pairs}
    if settings["freeze_backbone"]:
        extra["feature_views"] = settings["feature_views"]
    return model, history, extra


def train_clip(variant, settings, data: Data, backbone, device):
    """Zero-shot by prompts (not trained), or a linear probe on the frozen image embeddings."""
    model = variant.build(settings, len(data.classes), backbone=backbone).to(device)
    if variant.trained:
        history = fit_head(model.encoder, model.head, data, settings, device)
        extra = {"feature_views": settings["feature_views"]}
    else:
        model.head = clip_models.zero_shot_head(backbone, data.classes, settings["prompt"]).to(device)
        history, extra = zero_shot_history(model, data, device), {}
    return model, history, {**extra, "normalisation": "the CLIP backbone's own channel mean/std"}


RECIPES = {
    "network": train_network,
    "frozen_head": train_frozen_head,
    "embedding": train_embedding,
    "clip": train_clip,
}


def load_backbone(variant, settings, backbone_path, backbone_spec, allow_download):
    """What the variant starts from: a ResNet-18 without its final layer (random, or with
    `backbone_path`'s weights), a CLIP backbone, or nothing."""
    if variant.backbone == "clip":
        return clip_models.load_backbone(backbone_spec or {}, backbone_path, allow_download)
    if variant.backbone == "resnet18":
        backbone = models.backbone_resnet18()
        if settings.get("backbone", "random") != "random":
            models.load_backbone_state(backbone, backbone_path)
        return backbone
    return None
