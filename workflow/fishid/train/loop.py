"""The training loop, in the shape of torchvision's classification reference
(references/classification/train.py): `train_one_epoch`, `evaluate`, and the epoch loop that
keeps each epoch's history row.

The loop does not know what it trains: a recipe (fishid.train.recipes) hands it the model,
`train_batch(indices)`, which returns a batch's (inputs, labels) — freshly augmented images
or cached features (fishid.train.features) — and `validate(model)`, which returns the
validation (loss, accuracy).
"""

import logging
import time

import pandas as pd
import torch
import torch.nn.functional as F

from fishid import runtime
from fishid.runtime import predict_logits

log = logging.getLogger(__name__)


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


def evaluate(model, inputs, labels, device) -> tuple[float, float]:
    """(cross-entropy, accuracy) of a classifier over all `inputs`, in evaluation mode."""
    logits = predict_logits(model, inputs, device)
    return F.cross_entropy(logits, labels).item(), argmax_accuracy(logits, labels)


def classification_validator(val_inputs, val_labels, device):
    """validate(model) for the loop: `evaluate` on the validation inputs."""

    def validate(model):
        return evaluate(model, val_inputs, val_labels, device)

    return validate


def train_epochs(model, train_batch, n_train, validate, settings, device, loss_fn, batch_accuracy):
    """The epochs, one at a time: yields each epoch's history row. The study's recipe: SGD with
    momentum (or AdamW where a variant asks), StepLR, one pass over the training set per epoch."""
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
    """Every epoch (train_epochs); returns the history, its `selected` column marking the epoch
    whose weights the model keeps: the best on validation where `select_best_val` (the dataset
    has a test split, which alone is reported), else the last. With `majority` (the largest
    class's share of the training set), the log warns when training accuracy has stayed at it
    for `collapse_warning_epochs`."""
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
        model.load_state_dict(best[2])
    history["selected"] = history["epoch"] == (best[1] if best else history["epoch"].iloc[-1])
    return history
