"""The training stage's entry points, what `fishid train` and `fishid pretrain` run: train a
model (fishid.train.recipes says how, fishid.train.loop runs the epochs) or pre-train a
backbone, and return the run's records (fishid.train.record, which writes them all)."""

import logging
import time
from dataclasses import replace

import pandas as pd
import torch
from torch import nn

from fishid import steps
from fishid.config import with_training_defaults
from fishid.models import clip as clip_models
from fishid.models import openset
from fishid.models import registry as models
from fishid.runtime import predict_logits, select_device
from fishid.train import imagecache, record
from fishid.train.data import Data, on_device, plain_inputs, training_data
from fishid.train.recipes import RECIPES, fit_network, load_backbone

log = logging.getLogger(__name__)


def train_model(
    settings: dict,
    cache: dict,
    backbone_path=None,
    other_label: str = "",
    backbone_spec: dict | None = None,
    allow_download: bool = False,
) -> tuple[dict, pd.DataFrame, dict]:
    """Train the model `settings` describe; return (weights, history, meta)."""
    return record.records(fit_model(settings, cache, backbone_path, other_label, backbone_spec, allow_download))


def fit_model(settings, cache, backbone_path=None, other_label="", backbone_spec=None, allow_download=False):
    """The training run of the model `settings` describe (a record.Run)."""
    variant = models.variant(settings["arch"])
    settings = {**with_training_defaults(settings), "select_best_val": "test" in cache["split"]}
    torch.manual_seed(settings["seed"])
    device = select_device()
    threshold_label = other_label or "other"
    threshold_mode = settings["open_set"] == "threshold"
    data = on_device(training_data(cache, other_label if threshold_mode else ""), device)
    start = time.perf_counter()
    backbone = load_backbone(variant, settings, backbone_path, backbone_spec, allow_download)
    weights = {}
    if variant.backbone == "clip":
        # CLIP reads images normalised by its own statistics, and evaluation rebuilds its image
        # tower from the config the weights file keeps.
        data = replace(data, mean=backbone.mean, std=backbone.std)
        weights["architecture"] = {"clip": backbone.config}
    model, history, facts = RECIPES[variant.recipe](variant, settings, data, backbone, device)
    if threshold_mode:
        scores, labels = validation_scores(model, cache, data, device)
        choice = openset.choose_threshold(
            scores, labels, data.classes, threshold_label, settings["threshold_known_recall"]
        )
        weights["threshold"], weights["threshold_label"] = choice["threshold"], threshold_label
        facts["open_set_threshold"] = {**choice, "label": threshold_label}
    if "distance_threshold" in facts:
        weights["distance_threshold"] = facts["distance_threshold"]["threshold"]
    return record.Run(model, history, settings, data, cache, device, start, weights, facts)


def validation_scores(model, cache: dict, data: Data, device):
    """Softmax scores of every validation image (including any the model was not trained on)
    and their true labels."""
    images, labels = imagecache.subset(cache, "val")
    scores = torch.softmax(predict_logits(model, plain_inputs(images, data), device), 1)
    return scores.numpy(), [cache["classes"][i] for i in labels.tolist()]


def pretrain_backbone(settings: dict, cache: dict) -> tuple[dict, pd.DataFrame, dict]:
    """Pre-train a backbone on a pool of species: a whole ResNet-18 whose weights minus the
    final layer become a transfer-learning backbone, or (source clip_pretrain) a small CLIP
    trained on the pool's images captioned by the prompt."""
    if settings.get("source") == "clip_pretrain":
        return record.records(pretrain_clip(with_training_defaults(settings), cache))
    run = fit_model({**settings, "arch": "resnet18", "backbone": "random"}, cache)
    run.model.fc = nn.Identity()  # the backbone: what feeds the final layer
    return record.records(run)


def pretrain_clip(settings: dict, cache: dict) -> record.Run:
    """A small CLIP trained whole on the pool's images against their species' captions."""
    torch.manual_seed(settings["seed"])
    device = select_device()
    data = on_device(training_data(cache), device)
    start = time.perf_counter()
    model, config = clip_models.new_pretraining_model(settings, data.classes)
    model = model.to(device)
    history = fit_network(model, data, settings, device, loss_fn=clip_models.clip_loss)
    captions = [settings["prompt"].format(species=c) for c in data.classes]
    weights, facts = {"architecture": {"clip": config}}, {"captions": captions}
    return record.Run(model.clip, history, settings, data, cache, device, start, weights, facts)


@steps.declare(
    "pretrain",
    "pre-train a backbone",
    steps.inp("cache"),
    steps.SPEC,
    steps.THREADS,
    *steps.TRAIN_OUTPUTS,
)
def pretrain_step(cache, spec, weights, history, meta, threads=1):
    """The `pretrain` step (rule pretrain_backbone): the backbone's run, written."""
    torch.set_num_threads(threads)
    record.save(*pretrain_backbone(spec, imagecache.load(cache)), weights, history, meta)


@steps.declare(
    "train",
    "train one model",
    steps.inp("cache"),
    steps.SPEC,
    steps.inp("backbone", type="path?", default=None, help="the weights the model starts from, if any"),
    steps.par("backbone_spec", type="json", default={}, help="the backbone's settings as JSON"),
    steps.par("other_label", default="", help="the dataset's pooled 'other' label, if any"),
    steps.par("offline", type="bool", default=False, help="never download weights"),
    steps.THREADS,
    *steps.TRAIN_OUTPUTS,
)
def train_step(
    cache, spec, weights, history, meta, backbone=None, backbone_spec=None, other_label="", offline=False, threads=1
):
    """The `train` step (rule train_model): the model's run, written."""
    torch.set_num_threads(threads)
    result = train_model(spec, imagecache.load(cache), backbone, other_label, backbone_spec, allow_download=not offline)
    record.save(*result, weights, history, meta)
