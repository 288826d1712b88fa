"""The `owlv2` detector: Hugging Face transformers' OWLv2 (Owlv2ForObjectDetection with its
Owlv2Processor), zero-shot, prompted with text queries ("a photo of a fish"), used as it comes.

Nothing is trained. fetch() finds the model's files in the weights cache (huggingface_hub's
layout; downloaded once where the configuration allows) and writes the detector's folder: a
meta.json that records the settings and the snapshot it read, file by file with SHA-256. load()
reads that snapshot from disk only, and only its safetensors weights: transformers' pickled
pytorch_model.bin would run code as it loads, and is refused.

OWLv2's processor pads each photo with black below and to the right into a square before
resizing it to the model's input, so its boxes are fractions of the square; transformers' post-processing
scales them by the photo's longer side, which, the padding being below and to the right, puts
them in the photo's own pixels. A box that reaches into the padding is clipped to the photo; one
that lies all in the padding is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import batched_nms

from fishid.models import weights

META = "meta.json"

# The files transformers reads from an OWLv2 repository (google/owlv2-base-patch16-ensemble's,
# saved by transformers 4): the model's config, the image processor's, the CLIP tokenizer's.
LAYOUT = weights.HubLayout(
    what="OWLv2 model",
    files=(
        "config.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
    ),
    weights=("model.safetensors",),
    refused=("pytorch_model.bin",),
)

# How its raw output becomes boxes, as the synthetic detector's settings do it: OWLv2 scores every
# patch of its input (3,600 at 960 px) and suppresses nothing itself.
OWLV2_DEFAULTS = {
    "score_thresh": 0.05,  # boxes below this score are not reported at all
    "nms_thresh": 0.5,
    "detections_per_img": 10,
    # Photos per forward pass: the vision tower attends over all 3,600 patches of each, which at
    # 16 photos a pass would hold about 10 GB of attention weights per layer.
    "batch_size": 2,
}


class Owlv2Detector(nn.Module):
    """OWLv2 the way torchvision's detectors are called: a list of 3 x H x W pictures (0-1) in,
    per picture {"boxes" (x0, y0, x1, y1 in its pixels), "scores", "labels"} out."""

    def __init__(self, model: nn.Module, processor, settings: dict):
        super().__init__()
        self.model = model.eval()
        self.image_processor = processor.image_processor
        self.settings = OWLV2_DEFAULTS | settings
        text = processor(text=[list(self.settings["queries"])], return_tensors="pt")
        # Buffers: they follow the model to its device.
        self.register_buffer("input_ids", text["input_ids"], persistent=False)
        self.register_buffer("attention_mask", text["attention_mask"], persistent=False)

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        found = []
        step = self.settings["batch_size"]
        for start in range(0, len(images), step):
            found.extend(self._detect(images[start : start + step]))
        return found

    def _detect(self, images: list[torch.Tensor]) -> list[dict]:
        # The pictures are 0-1 already: the processor's own rescaling (of 0-255) is skipped.
        pixels = self.image_processor(images=[image.cpu() for image in images], do_rescale=False, return_tensors="pt")
        outputs = self.model(
            input_ids=self.input_ids.repeat(len(images), 1),
            attention_mask=self.attention_mask.repeat(len(images), 1),
            pixel_values=pixels["pixel_values"].to(self.input_ids.device),
        )
        sizes = [tuple(image.shape[-2:]) for image in images]
        raw = self.image_processor.post_process_object_detection(
            outputs, threshold=self.settings["score_thresh"], target_sizes=sizes
        )
        return [self._kept(found, height, width) for found, (height, width) in zip(raw, sizes)]

    def _kept(self, found: dict, height: int, width: int) -> dict:
        """Boxes clipped to the photo, overlaps suppressed, the best few; labels: each box's query."""
        boxes = found["boxes"].clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        # A box that lay all in the padding is flat once clipped: it holds none of the photo.
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[inside], found["scores"][inside], found["labels"][inside]
        # A fish found by two queries is one fish: suppression across queries, not per query.
        keep = batched_nms(boxes, scores, torch.zeros_like(labels), self.settings["nms_thresh"])
        keep = keep[: self.settings["detections_per_img"]]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def fetch(settings: dict, folder, allow_download: bool) -> dict:
    """The detector's folder for `settings` (detect.owlv2): its meta.json names the settings and
    the snapshot of the model's files in settings["cache"], which it finds there or downloads once
    (where allowed). Missing offline: a WeightsUnavailable naming the model and the folder to fill."""
    settings = OWLV2_DEFAULTS | settings
    files = weights.hub_snapshot(settings["model"], settings["model"], LAYOUT, settings["cache"], allow_download)
    record = {"detector": "owlv2", "settings": settings, "snapshot": weights.hub_record(settings["model"], files)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).write_text(json.dumps(record, indent=2) + "\n")
    return record


def snapshot_folder(folder: Path, record: dict) -> Path:
    """The snapshot a detector folder's record names. A relative one is relative to the project,
    three folders above the detector's (results/detect/owlv2), as the rules run there."""
    path = Path(record["snapshot"]["folder"])
    return path if path.is_absolute() else folder.resolve().parents[2] / path


def load(folder) -> Owlv2Detector:
    """The detector of a folder fetch() wrote, from its snapshot on disk, in eval mode."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    folder = Path(folder)
    if not (folder / META).is_file():
        raise FileNotFoundError(
            f"detector 'owlv2': {folder} must hold {META}; fetch the detector first (rule fetch_detector)"
        )
    record = json.loads((folder / META).read_text())
    if record.get("detector") != "owlv2":
        raise ValueError(f"{folder / META}: a {record.get('detector')!r} detector, not 'owlv2'")
    snapshot = snapshot_folder(folder, record)
    model_weights = snapshot / LAYOUT.weights[0]
    if not model_weights.is_file():
        pickled = [snapshot / name for name in LAYOUT.refused if (snapshot / name).is_file()]
        remedy = f"put {LAYOUT.weights[0]} from https://huggingface.co/{record['settings']['model']} in {snapshot}"
        if pickled:
            raise weights.refused_pickle(pickled[0], remedy)
        raise weights.WeightsUnavailable(f"{model_weights} is missing: {remedy}")
    # A local folder, safetensors only: transformers reads no network and no pickle.
    processor = Owlv2Processor.from_pretrained(snapshot, local_files_only=True)
    model = Owlv2ForObjectDetection.from_pretrained(snapshot, local_files_only=True, use_safetensors=True)
    return Owlv2Detector(model, processor, record["settings"]).eval()
