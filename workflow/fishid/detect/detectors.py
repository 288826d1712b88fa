"""The detectors, declared in one table (DETECTORS: name -> how to build, train, save and load).

`synthetic`: torchvision's FCOS (one-stage, anchor-free, one class "fish") on a small
convolutional backbone, trained from scratch by the pipeline on synthetic renders whose boxes
are known (fishid.sources.synthetic_boxes). torchvision's own small detectors are built on
MobileNetV3 for 320 px and up: on one CPU thread at 160 x 120, an SSDlite training step took
0.18 s an image and a Faster R-CNN one 0.67 s, this one under 0.01 s, which is what lets it
learn in about a minute. Two feature levels (strides 8 and 16) cover both the small fish of a
wide reef scene and a fish that fills the frame; FCOS gives each level the boxes of its size.

A trained detector is a folder: weights.pt (the state dict, loaded as tensors only) and
meta.json (the detector's name, its settings, how it trained).

`owlv2`: Hugging Face transformers' OWLv2, prompted "a photo of a fish", the detector real photos
need, used as it comes (fishid.detect.owlv2). Its folder is a meta.json only, naming the snapshot
of the model's files in the weights cache that it reads.

Whether the pipeline trains a detector or fetches it is fishid.variants.TRAINED_DETECTORS (the
Snakefile reads it without importing PyTorch); tests/unit/test_detect_owlv2.py checks it agrees.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from fishid import steps
from fishid.detect import owlv2
from fishid.models.weights import load_weights

log = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
META = "meta.json"

# The `synthetic` detector's settings that a configuration does not set. Those it sets
# (CONFIGURED: detect.training's) have their defaults in config/schema.yaml only, filled in by
# fishid.config before the rule hands them over.
CONFIGURED = ("epochs", "batch_size", "lr", "seed")
SYNTHETIC_DEFAULTS = {
    # Channels of the backbone's four stride-2 stages. Twice as wide scored about the same on the
    # demo's photos (bench/results/detect_demo.md) at twice the training time.
    "widths": [8, 16, 32, 32],
    "levels": [8, 16],  # strides of the feature maps the head sees
    "head_convs": 2,  # torchvision's FCOS head has 4 per branch: at 64 channels 2 suffice and halve its cost
    "min_size": 120,  # the model resizes each photo to this short side (at most max_size long)
    "max_size": 160,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_steps": 50,
    "flip": True,
    "score_thresh": 0.05,  # boxes below this score are not reported at all
    "nms_thresh": 0.5,
    "detections_per_img": 10,
}


def synthetic_settings(settings: dict) -> dict:
    """The `synthetic` detector's full settings: `settings` (detect.training, its defaults filled
    in: fishid.config.section_with_defaults) over SYNTHETIC_DEFAULTS."""
    if missing := [key for key in CONFIGURED if key not in settings]:
        raise ValueError(
            f"detector settings without {', '.join(missing)}: hand detect.training with the defaults of "
            "config/schema.yaml filled in (fishid.config.with_schema_defaults or section_with_defaults)"
        )
    return SYNTHETIC_DEFAULTS | settings


class SmallBackbone(nn.Module):
    """Stride-2 stages of two 3x3 conv-BN-ReLU layers each; returns the maps at `levels` (strides)."""

    def __init__(self, widths: Sequence[int], levels: Sequence[int]):
        super().__init__()
        if len({widths[int(math.log2(level)) - 1] for level in levels}) != 1:
            raise ValueError(f"the FCOS head needs one width at every level: widths {widths}, levels {levels}")
        self.stages = nn.ModuleList()
        channels = 3
        for width in widths:
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            channels = width
        self.levels = list(levels)
        self.out_channels = widths[int(math.log2(levels[0])) - 1]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            stride = 2 ** (i + 1)
            if stride in self.levels:
                features[str(stride)] = x
        return features


def build_synthetic(settings: dict) -> FCOS:
    """The untrained `synthetic` detector of `settings` (SYNTHETIC_DEFAULTS overridden)."""
    s = SYNTHETIC_DEFAULTS | settings
    backbone = SmallBackbone(s["widths"], s["levels"])
    if backbone.out_channels % 32:
        raise ValueError(
            f"widths {s['widths']}: the FCOS head's group norm needs a multiple of 32 channels at its levels"
        )
    # FCOS reads each level's anchor size as its stride (box regression is in units of it).
    anchors = AnchorGenerator(tuple((level,) for level in s["levels"]), ((1.0,),) * len(s["levels"]))
    model = FCOS(
        backbone,
        num_classes=2,  # background and fish, as torchvision counts classes
        min_size=s["min_size"],
        max_size=s["max_size"],
        anchor_generator=anchors,
        score_thresh=s["score_thresh"],
        nms_thresh=s["nms_thresh"],
        detections_per_img=s["detections_per_img"],
        # From scratch, no ImageNet statistics to match: centre and scale 0-1 pixels roughly.
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    )
    model.head = FCOSHead(backbone.out_channels, 1, 2, num_convs=s["head_convs"])
    return model


def flipped(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    width = image.shape[-1]
    return image.flip(-1), torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def train_synthetic(
    images: Sequence[torch.Tensor],
    boxes: Sequence[torch.Tensor],
    settings: dict,
    progress: Callable | None = None,
    device: torch.device | None = None,
) -> tuple[FCOS, list[dict]]:
    """Train the `synthetic` detector on images (3 x H x W, 0-1) and their true boxes (N x 4,
    pixels; N may be 0): (the model in eval mode, one history row per epoch).

    torchvision's detection reference loop, cut down: SGD with momentum, a linear warm-up, then
    a cosine decay of the learning rate, random horizontal flips; seeded."""
    s = synthetic_settings(settings)
    torch.manual_seed(s["seed"])
    order = random.Random(s["seed"])
    device = device or torch.device("cpu")
    model = build_synthetic(s).to(device)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(parameters, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    steps_per_epoch = math.ceil(len(images) / s["batch_size"])
    total = steps_per_epoch * s["epochs"]

    def factor(step):
        if step < s["warmup_steps"]:
            return (step + 1) / s["warmup_steps"]
        return 0.5 * (1 + math.cos(math.pi * (step - s["warmup_steps"]) / max(1, total - s["warmup_steps"])))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    history = []
    for epoch in range(s["epochs"]):
        started, losses = time.perf_counter(), []
        indices = list(range(len(images)))
        order.shuffle(indices)
        for start in range(0, len(indices), s["batch_size"]):
            batch, targets = [], []
            for i in indices[start : start + s["batch_size"]]:
                image, truth = images[i], boxes[i].reshape(-1, 4).float()
                if s["flip"] and order.random() < 0.5:
                    image, truth = flipped(image, truth)
                batch.append(image)
                targets.append({"boxes": truth, "labels": torch.ones(len(truth), dtype=torch.int64)})
            batch = [image.to(device) for image in batch]
            targets = [{key: value.to(device) for key, value in target.items()} for target in targets]
            loss_parts = model(batch, targets)
            loss = sum(loss_parts.values())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"detector training diverged at epoch {epoch + 1}: loss {loss.item()}")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append({name: value.item() for name, value in loss_parts.items()})
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 2)}
        row |= {name: round(sum(part[name] for part in losses) / len(losses), 4) for name in losses[0]}
        history.append(row)
        log.info("detector epoch %s", row)
        if progress:
            progress(row)
    return model.cpu().eval(), history


def save_synthetic(model: FCOS, settings: dict, folder, **meta) -> Path:
    """Write the detector's folder: weights.pt and meta.json (name, settings, and `meta`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS)
    record = {"detector": "synthetic", "settings": synthetic_settings(settings), **meta}
    (folder / META).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def load_synthetic(folder) -> FCOS:
    """The trained `synthetic` detector of a folder save_synthetic wrote, in eval mode."""
    folder = Path(folder)
    meta = read_meta(folder, "synthetic")
    model = build_synthetic(meta["settings"])
    model.load_state_dict(load_weights(folder / WEIGHTS, "train the detector again"))
    return model.eval()


def read_meta(folder: Path, expected: str) -> dict:
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"detector {expected!r}: {folder} must hold {WEIGHTS} and {META}; train the detector first"
        )
    meta = json.loads((folder / META).read_text())
    if meta.get("detector") != expected:
        raise ValueError(f"{folder / META}: a {meta.get('detector')!r} detector, not {expected!r}")
    return meta


@dataclass(frozen=True)
class DetectorKind:
    """How a detector comes to be and is read back. `train` is None for one used as it comes,
    whose files `fetch` (its settings, its folder, whether it may download) finds instead."""

    load: Callable[[Path], nn.Module]
    train: Callable | None
    save: Callable | None
    description: str
    fetch: Callable[[dict, Path, bool], dict] | None = None


DETECTORS = {
    "synthetic": DetectorKind(
        load=load_synthetic,
        train=train_synthetic,
        save=save_synthetic,
        description="FCOS on a small backbone, trained from scratch on synthetic renders and their known boxes",
    ),
    "owlv2": DetectorKind(
        load=owlv2.load,
        train=None,
        save=None,
        fetch=owlv2.fetch,
        description="Hugging Face transformers' OWLv2, zero-shot, prompted with text queries, used as it comes",
    ),
}


def detector_kind(name: str) -> DetectorKind:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]


def fetch_detector(name: str, settings: dict, folder, allow_download: bool) -> dict:
    """The folder of a detector used as it comes (its meta.json, returned), its files found in
    the weights cache or downloaded once where allowed."""
    kind = detector_kind(name)
    if kind.fetch is None:
        raise ValueError(
            f"detector {name!r} is trained by the pipeline (rule train_detector): there is nothing to fetch"
        )
    return kind.fetch(settings, Path(folder), allow_download)


def load_detector(name: str, folder) -> nn.Module:
    """Detector `name` from its folder, ready to predict: called on a list of images (3 x H x W,
    0-1) it returns, per image, {"boxes", "scores", "labels"} in that image's pixels."""
    return detector_kind(name).load(Path(folder))


@steps.declare(
    "fetch-detector",
    "fetch a detector used as it comes",
    steps.Option("detector", "wildcards"),
    steps.SPEC,
    steps.OFFLINE,
    steps.par("out", key="folder", help="the detector's folder (its meta.json)"),
)
def fetch_step(detector, spec, out, offline=False):
    """The `fetch-detector` step (rule fetch_detector): `out` is the detector's folder."""
    record = fetch_detector(detector, spec, out, allow_download=not offline)
    log.info("detector %s: %s in %s", detector, record["snapshot"]["model"], record["snapshot"]["folder"])
