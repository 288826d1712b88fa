"""Training, in the shape of torchvision's classification reference: one loop, plain SGD.

Full networks (RI, backbone pre-training) see a fresh random crop and flip of every image
each epoch. Frozen-backbone models (TL) compute the backbone's features once, for a fixed
number of augmented views per image, and train only the new final layer on them.
"""

import json
import logging
import platform
import time

import pandas as pd
import torch
import torchvision
from torch import nn

import fishid
from fishid import augment, imagecache, models

log = logging.getLogger(__name__)


def select_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    log.info("CUDA is not usable here: training on the CPU with %d thread(s)", torch.get_num_threads())
    return torch.device("cpu")


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean.view(1, -1, 1, 1).to(images.device)) / std.view(1, -1, 1, 1).to(images.device)


def train_loop(model, train_batch, n_train, val_inputs, val_labels, settings, device) -> pd.DataFrame:
    """The study's recipe: cross-entropy, SGD with momentum, StepLR. `train_batch(indices)`
    returns the (inputs, labels) of a training batch, so the loop does not care whether it
    sees augmented images or cached features."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings["lr"],
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings["step_size"], gamma=settings["gamma"])
    generator = torch.Generator().manual_seed(settings["seed"])
    history = []
    for epoch in range(1, settings["epochs"] + 1):
        start = time.perf_counter()
        model.train()
        total_loss, correct = 0.0, 0
        for indices in torch.randperm(n_train, generator=generator).split(settings["batch_size"]):
            inputs, labels = train_batch(indices)
            inputs, labels = inputs.to(device), labels.to(device)
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_logits = predict_logits(model, val_inputs, device, settings["batch_size"] * 8)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total_loss / n_train,
                "train_acc": correct / n_train,
                "val_loss": criterion(val_logits, val_labels).item(),
                "val_acc": (val_logits.argmax(1) == val_labels).float().mean().item(),
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
        )
        log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in history[-1].items() if k != "epoch"})
    return pd.DataFrame(history)


@torch.no_grad()
def predict_logits(model, inputs, device, batch_size=256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(chunk.to(device)).float().cpu() for chunk in inputs.split(batch_size)])


def augmented_batches(images, labels, mean, std, settings, generator):
    def train_batch(indices):
        crops = augment.random_resized_crop_flip(
            images[indices], scale=settings["crop_scale"], flip=settings["flip"], generator=generator
        )
        return normalise(crops, mean, std), labels[indices]

    return train_batch


def fit_network(model, cache, settings, device):
    """Train every parameter of `model` on the cache's training images."""
    mean, std = cache["mean"], cache["std"]
    train_x, train_y = imagecache.subset(cache, "train")
    val_x, val_y = imagecache.subset(cache, "val")
    generator = torch.Generator().manual_seed(settings["seed"] + 1)
    train_batch = augmented_batches(train_x, train_y, mean, std, settings, generator)
    val_inputs = normalise(augment.to_float(val_x), mean, std)
    return train_loop(model, train_batch, len(train_y), val_inputs, val_y, settings, device)


@torch.no_grad()
def extract_features(backbone, images, mean, std, settings, device, views: int, generator) -> torch.Tensor:
    """Backbone features of `views` random augmentations of every image: (views, N, 512).
    views=0 gives the plain images, as seen at evaluation."""
    backbone.eval()
    out = []
    for _ in range(max(views, 1)):
        chunks = []
        for chunk in images.split(256):
            if views:
                chunk = augment.random_resized_crop_flip(
                    chunk, scale=settings["crop_scale"], flip=settings["flip"], generator=generator
                )
            else:
                chunk = augment.to_float(chunk)
            chunks.append(backbone(normalise(chunk, mean, std).to(device)).float().cpu())
        out.append(torch.cat(chunks))
    return torch.stack(out)


def fit_head(backbone, num_classes, cache, settings, device):
    """Train a new final layer on frozen backbone features; return (full model, history)."""
    mean, std = cache["mean"], cache["std"]
    train_x, train_y = imagecache.subset(cache, "train")
    val_x, val_y = imagecache.subset(cache, "val")
    generator = torch.Generator().manual_seed(settings["seed"] + 1)
    views = settings["feature_views"]
    train_features = extract_features(backbone, train_x, mean, std, settings, device, views, generator)
    val_features = extract_features(backbone, val_x, mean, std, settings, device, 0, generator)[0]
    head = nn.Linear(train_features.shape[-1], num_classes).to(device)

    def train_batch(indices):
        # Each epoch sees each image once, in one of its precomputed augmented views.
        view = torch.randint(views, (len(indices),), generator=generator)
        return train_features[view, indices], train_y[indices]

    history = train_loop(head, train_batch, len(train_y), val_features, val_y, settings, device)
    backbone.fc = head
    return backbone, history


def make_backbone(settings, backbone_path):
    backbone = models.backbone_resnet18()
    if settings["backbone"] != "random":
        models.load_backbone_state(backbone, backbone_path)
    for parameter in backbone.parameters():
        parameter.requires_grad = False
    return backbone


def train_model(settings: dict, cache: dict, backbone_path=None) -> tuple[dict, pd.DataFrame, dict]:
    """Train the model `settings` describe; return (weights, history, meta)."""
    torch.manual_seed(settings["seed"])
    device = select_device()
    num_classes = len(cache["classes"])
    start = time.perf_counter()
    if settings["arch"] == "tl":
        model, history = fit_head(
            make_backbone(settings, backbone_path).to(device), num_classes, cache, settings, device
        )
    else:
        model = models.build(settings, num_classes).to(device)
        history = fit_network(model, cache, settings, device)
    weights = {
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        "classes": cache["classes"],
        "mean": cache["mean"],
        "std": cache["std"],
    }
    meta = {
        "settings": settings,
        "classes": cache["classes"],
        "mean": cache["mean"].tolist(),
        "std": cache["std"].tolist(),
        "n_train": int(sum(s == "train" for s in cache["split"])),
        "split_crc32": cache["split_crc32"],
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "versions": {
            "fishid": fishid.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    return weights, history, meta


def pretrain_backbone(settings: dict, cache: dict) -> tuple[dict, pd.DataFrame, dict]:
    """Train a whole ResNet-18 on a pool of species; its weights minus the final layer
    become a backbone for transfer learning."""
    weights, history, meta = train_model({**settings, "arch": "resnet18"}, cache)
    weights["model"] = {k: v for k, v in weights["model"].items() if not k.startswith("fc.")}
    return weights, history, meta


def save(weights, history, meta, weights_path, history_path, meta_path) -> None:
    torch.save(weights, weights_path)
    history.to_csv(history_path, index=False)
    with open(meta_path, "w") as handle:
        json.dump(meta, handle, indent=2)
