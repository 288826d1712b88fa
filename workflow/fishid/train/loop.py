"""Training, in the shape of torchvision's classification reference: one loop for every variant.

Full networks (RI, ResNet-18 from scratch or fine-tuned, unfrozen embedding networks, the
demo's CLIP pre-training) see a fresh random crop and flip of every image each epoch.
Frozen encoders (TL, CLIP linear probe, frozen siamese/triplet) compute their features once,
for `feature_views` augmented views per image, and train only the new layers on them.

Which recipe trains which variant is said by the variant's entry in fishid.models.registry;
RECIPES maps the recipe names to the functions here.
"""

import contextlib
import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fishid
from fishid import runtime
from fishid.config import with_training_defaults
from fishid.models import clip as clip_models
from fishid.models import embeddings, openset
from fishid.models import registry as models
from fishid.models.heads import FeatureScaler
from fishid.runtime import normalise, predict_logits, select_device  # noqa: F401  (evaluate, predict use them)
from fishid.train import augment, imagecache

log = logging.getLogger(__name__)

FEATURE_BATCH = 256


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
    """The cache's train and val images; without `exclude_label`'s images when it is given
    (a threshold open-set model never sees "other")."""
    train_x, train_y = imagecache.subset(cache, "train")
    val_x, val_y = imagecache.subset(cache, "val")
    classes = list(cache["classes"])
    if exclude_label in classes:
        drop = classes.index(exclude_label)
        classes.remove(exclude_label)
        remap = torch.tensor([i - (i > drop) for i in range(len(cache["classes"]))])
        train_x, train_y = train_x[train_y != drop], remap[train_y[train_y != drop]]
        val_x, val_y = val_x[val_y != drop], remap[val_y[val_y != drop]]
    return Data(train_x, train_y, val_x, val_y, classes, cache["mean"], cache["std"])


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


def make_optimizer(parameters, settings):
    if settings["optimizer"] == "adamw":
        return torch.optim.AdamW(parameters, lr=settings["lr"], weight_decay=settings["weight_decay"])
    return torch.optim.SGD(
        parameters, lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"]
    )


def argmax_accuracy(outputs, labels) -> float:
    return (outputs.argmax(1) == labels).float().mean().item()


def majority_share(labels: torch.Tensor) -> float:
    return labels.bincount().max().item() / len(labels)


def at_majority(train_acc: float, share: float, n_train: int) -> bool:
    """Whether an epoch's training accuracy is the majority class's share, within one image:
    what a network that predicts the majority class for every image scores."""
    return abs(train_acc - share) <= 1 / n_train + 1e-9


def left_majority_epoch(history: pd.DataFrame, share: float, n_train: int) -> int | None:
    """The first epoch whose training accuracy was not the majority share, or None."""
    left = [row.epoch for row in history.itertuples() if not at_majority(row.train_acc, share, n_train)]
    return int(left[0]) if left else None


def train_loop(
    model,
    train_batch,
    n_train,
    validate,
    settings,
    device,
    loss_fn=F.cross_entropy,
    batch_accuracy=argmax_accuracy,
    majority: float | None = None,
) -> pd.DataFrame:
    """The study's recipe: SGD with momentum (or AdamW where a variant asks), StepLR, one pass
    over the training set per epoch. `train_batch(indices)` returns a batch's (inputs, labels),
    so the loop does not care whether it sees images or cached features; `validate(model)`
    returns (val_loss, val_acc). With `majority` (the largest class's share of the training
    set), the log warns when training accuracy has stayed at it for `collapse_warning_epochs`."""
    rows, best, stuck = [], None, 0
    for row in train_epochs(model, train_batch, n_train, validate, settings, device, loss_fn, batch_accuracy):
        rows.append(row)
        stuck = stuck + 1 if majority is not None and at_majority(row["train_acc"], majority, n_train) else 0
        if stuck == settings["collapse_warning_epochs"]:
            log.warning(
                "training accuracy has been the majority class's share (%.3f) for %d epochs: the network "
                "may be predicting that class for every image (check the model's lr and init)",
                majority,
                stuck,
            )
        if settings.get("select_best_val") and (best is None or row["val_acc"] > best[0]):
            best = (row["val_acc"], row["epoch"], {k: v.detach().clone() for k, v in model.state_dict().items()})
    history = pd.DataFrame(rows)
    if best is not None:
        # Model selection on validation: the dataset has a test split, which alone is reported.
        model.load_state_dict(best[2])
    history["selected"] = history["epoch"] == (best[1] if best else history["epoch"].iloc[-1])
    return history


def train_epochs(model, train_batch, n_train, validate, settings, device, loss_fn, batch_accuracy):
    """train_loop one epoch at a time: yields each epoch's history row."""
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings["step_size"], gamma=settings["gamma"])
    scaler = runtime.grad_scaler(device)
    generator = torch.Generator().manual_seed(settings["seed"])
    for epoch in range(1, settings["epochs"] + 1):
        start = time.perf_counter()
        batches = torch.randperm(n_train, generator=generator).split(settings["batch_size"])
        train_loss, train_acc, data_seconds = train_one_epoch(
            model, train_batch, batches, optimizer, scaler, device, loss_fn, batch_accuracy, settings["cpu_bfloat16"]
        )
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_loss, val_acc = validate(model)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "seconds": time.perf_counter() - start,
            "data_seconds": data_seconds,
        }
        log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in row.items() if k != "epoch"})
        yield row


def train_one_epoch(model, train_batch, batches, optimizer, scaler, device, loss_fn, batch_accuracy, cpu_bfloat16):
    """One pass over `batches` (index tensors): (mean loss, accuracy, seconds spent getting the
    batches)."""
    model.train()
    data_seconds, total_loss, correct, seen = 0.0, 0.0, 0.0, 0
    for indices in batches:
        loaded = time.perf_counter()
        inputs, labels = train_batch(indices)
        inputs, labels = runtime.to_device(inputs, device), labels.to(device)
        data_seconds += time.perf_counter() - loaded
        with runtime.autocast(device, cpu_bfloat16):
            outputs = model(inputs)
            loss = loss_fn(outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(labels)
        correct += batch_accuracy(outputs.detach().float(), labels) * len(labels)
        seen += len(labels)
    return total_loss / seen, correct / seen, data_seconds


def classification_validator(val_inputs, val_labels, device):
    def validate(model):
        logits = predict_logits(model, val_inputs, device, FEATURE_BATCH)
        return F.cross_entropy(logits, val_labels).item(), argmax_accuracy(logits, val_labels)

    return validate


def augmented_batches(images, labels, mean, std, settings, generator):
    def train_batch(indices):
        crops = augment.random_resized_crop_flip(
            images[indices], scale=settings["crop_scale"], flip=settings["flip"], generator=generator
        )
        return normalise(crops, mean, std), labels[indices]

    return train_batch


def plain_inputs(images, data: Data) -> torch.Tensor:
    return normalise(augment.to_float(images), data.mean, data.std)


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
        for chunk in images[order].tensor_split(n_chunks):
            if views:
                chunk = augment.random_resized_crop_flip(
                    chunk, scale=settings["crop_scale"], flip=settings["flip"], generator=generator
                )
            else:
                chunk = augment.to_float(chunk)
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
    views = train_features.shape[0]

    def train_batch(indices):
        # Each epoch sees each image once, in one of its precomputed augmented views.
        view = torch.randint(views, (len(indices),), generator=generator)
        return train_features[view, indices], train_y[indices]

    return train_batch


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
            return (
                predict_logits(trainable, val_features, device, FEATURE_BATCH),
                predict_logits(trainable, plain_features, device, FEATURE_BATCH),
            )

    else:
        # Standardise by the untrained encoder's features; the encoder then learns on.
        model.projector[0].fit(extract_features(model.encoder, data.train_x, data, settings, device, 0, None)[0].cpu())
        model = runtime.prepare(model, device)
        generator = torch.Generator().manual_seed(settings["seed"] + 1)
        train_batch = augmented_batches(data.train_x, data.train_y, data.mean, data.std, settings, generator)
        trainable = EmbeddingOfImages(model)
        val_inputs, gallery_inputs = plain_inputs(data.val_x, data), plain_inputs(data.train_x, data)

        def embed_val_and_gallery():
            return (
                predict_logits(trainable, val_inputs, device, FEATURE_BATCH),
                predict_logits(trainable, gallery_inputs, device, FEATURE_BATCH),
            )

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
        logits = predict_logits(model, plain_inputs(images, data), device, FEATURE_BATCH)
        row[f"{role}_loss"] = F.cross_entropy(logits, labels).item()
        row[f"{role}_acc"] = argmax_accuracy(logits, labels)
    return pd.DataFrame([{**row, "lr": 0.0, "seconds": time.perf_counter() - start, "data_seconds": 0.0}])


# The recipes: (variant, settings, data, backbone, device) -> (trained model, history, what
# the model's meta adds).


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


def code_version() -> str:
    """The git commit of the package's checkout (with '+dirty' for local changes), if any."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if status.strip() else "")


def library_versions() -> dict:
    versions = {
        "fishid": fishid.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }
    # Only where a CLIP model used it: importing open_clip takes seconds.
    if "open_clip" in sys.modules:
        versions["open_clip"] = sys.modules["open_clip"].__version__
    return versions


def validation_scores(model, cache: dict, data: Data, device):
    """Softmax scores of every validation image (including any the model was not trained on)
    and their true labels."""
    images, labels = imagecache.subset(cache, "val")
    scores = torch.softmax(predict_logits(model, plain_inputs(images, data), device, FEATURE_BATCH), 1)
    return scores.numpy(), [cache["classes"][i] for i in labels.tolist()]


def train_model(
    settings: dict,
    cache: dict,
    backbone_path=None,
    other_label: str = "",
    backbone_spec: dict | None = None,
    allow_download: bool = False,
) -> tuple[dict, pd.DataFrame, dict]:
    """Train the model `settings` describe; return (weights, history, meta)."""
    variant = models.variant(settings["arch"])
    settings = {**with_training_defaults(settings), "select_best_val": "test" in cache["split"]}
    torch.manual_seed(settings["seed"])
    device = select_device()
    threshold_label = other_label or "other"
    threshold_mode = settings["open_set"] == "threshold"
    data = on_device(training_data(cache, other_label if threshold_mode else ""), device)
    start = time.perf_counter()
    backbone = load_backbone(variant, settings, backbone_path, backbone_spec, allow_download)
    architecture = None
    if variant.backbone == "clip":
        # CLIP reads images normalised by its own statistics, and evaluation rebuilds its image
        # tower from the config the weights file keeps.
        data = replace(data, mean=backbone.mean, std=backbone.std)
        architecture = {"clip": backbone.config}
    model, history, extra = RECIPES[variant.recipe](variant, settings, data, backbone, device)
    # How cleaning derived the images: fishid predict makes the same of a new photo.
    weights = weights_record(model, data, preprocess=cache.get("preprocess", {}))
    if architecture:
        weights["architecture"] = architecture
    if threshold_mode:
        scores, labels = validation_scores(model, cache, data, device)
        choice = openset.choose_threshold(
            scores, labels, data.classes, threshold_label, settings["threshold_known_recall"]
        )
        weights["threshold"], weights["threshold_label"] = choice["threshold"], threshold_label
        extra["open_set_threshold"] = {**choice, "label": threshold_label}
    if "distance_threshold" in extra:
        weights["distance_threshold"] = extra["distance_threshold"]["threshold"]
    share = majority_share(data.train_y)
    meta = run_record(
        settings,
        data,
        cache,
        device,
        start,
        mean=data.mean.tolist(),
        std=data.std.tolist(),
        n_val=len(data.val_y),
        # A network that predicts the largest class for every image scores its share.
        majority_share=share,
        left_majority_epoch=left_majority_epoch(history, share, len(data.train_y)),
        **extra,
        split_crc32=cache["split_crc32"],
        mixed_precision="float16" if device.type == "cuda" else "bfloat16" if settings["cpu_bfloat16"] else "no",
    )
    return weights, history, meta


def pretrain_backbone(settings: dict, cache: dict) -> tuple[dict, pd.DataFrame, dict]:
    """Pre-train a backbone on a pool of species: a whole ResNet-18 whose weights minus the
    final layer become a transfer-learning backbone, or (source clip_pretrain) a small CLIP
    trained on the pool's images captioned by the prompt."""
    if settings.get("source") == "clip_pretrain":
        return pretrain_clip(with_training_defaults(settings), cache)
    weights, history, meta = train_model({**settings, "arch": "resnet18", "backbone": "random"}, cache)
    weights["model"] = {k: v for k, v in weights["model"].items() if not k.startswith("fc.")}
    return weights, history, meta


def pretrain_clip(settings: dict, cache: dict) -> tuple[dict, pd.DataFrame, dict]:
    torch.manual_seed(settings["seed"])
    device = select_device()
    data = on_device(training_data(cache), device)
    start = time.perf_counter()
    model, config = clip_models.new_pretraining_model(settings, data.classes)
    model = model.to(device)
    history = fit_network(model, data, settings, device, loss_fn=clip_models.clip_loss)
    weights = weights_record(model.clip, data, architecture={"clip": config})
    captions = [settings["prompt"].format(species=c) for c in data.classes]
    return weights, history, run_record(settings, data, cache, device, start, captions=captions)


def weights_record(model, data: Data, **more) -> dict:
    """What a weights file holds: the state, the classes and the normalisation, and `more`."""
    state = {k: v.cpu().contiguous() for k, v in model.state_dict().items()}
    return {"model": state, "classes": data.classes, "mean": data.mean, "std": data.std, **more}


def run_record(settings: dict, data: Data, cache: dict, device, start: float, **facts) -> dict:
    """meta.json of a training run: its settings, data and `facts`, how long it took, where,
    and with which code and libraries."""
    return {
        "settings": settings,
        "classes": data.classes,
        "n_train": len(data.train_y),
        **facts,
        "dataset_table_sha256": cache.get("split_sha256", ""),
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "code_version": code_version(),
        "versions": library_versions(),
    }


def save(weights, history, meta, weights_path, history_path, meta_path) -> None:
    torch.save(weights, weights_path)
    history.to_csv(history_path, index=False)
    with open(meta_path, "w") as handle:
        json.dump(meta, handle, indent=2)
