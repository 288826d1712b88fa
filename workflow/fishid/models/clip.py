"""CLIP through open_clip: zero-shot classification by prompts, a linear head on frozen image
embeddings, and the small CLIP the offline demo pre-trains itself.

A CLIP backbone comes from one of two places:
- `source: open_clip`: a model open_clip knows (`model: ViT-B-32`, or `local-dir:/folder`)
  with `pretrained:` weights, a tag the library downloads into `cache` the usual way, or a
  local file. Offline, a tag must already be in the cache; if not, the error says what to
  download and where to point `pretrained`. A model on the Hugging Face Hub
  (`model: hf-hub:imageomics/bioclip-2`, no `pretrained`) is read from its snapshot folder
  in `cache` (huggingface_hub's layout, filled by rule open_clip_weights; weights.hub_files),
  so that training never needs the network.
- `source: clip_pretrain`: an open_clip CLIP built from the `clip:` config dict and trained
  by this pipeline on a dataset's images captioned with the prompt (rule pretrain_backbone).

A trained model's weights file keeps the image tower's config, so evaluation rebuilds the
network without the backbone or the network.
"""

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fishid.models import weights
from fishid.models.heads import FeatureScaler
from fishid.models.weights import WeightsUnavailable

# open_clip is imported where it is used: importing it takes about a second, which every
# training and evaluation job (most of them no CLIP model) would pay.

log = logging.getLogger(__name__)


def vision_size(config: dict) -> int:
    size = config["vision_cfg"].get("image_size", 224)
    return size[0] if isinstance(size, list | tuple) else size


class CLIPImageEncoder(nn.Module):
    """CLIP's image tower; images of another size are resized to the tower's input size."""

    def __init__(self, visual: nn.Module, image_size: int):
        super().__init__()
        self.visual, self.image_size = visual, image_size

    def forward(self, x):
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return F.normalize(self.visual(x), dim=-1)


class CLIPClassifier(nn.Module):
    """Unit-length image embedding, then a linear layer: the prompts' text embeddings times
    CLIP's logit scale (zero-shot), or a trained head (linear probe)."""

    def __init__(self, encoder: CLIPImageEncoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def embed(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.head(self.encoder(x))


def linear_head(dim: int, num_classes: int) -> nn.Module:
    return nn.Sequential(FeatureScaler(dim), nn.Linear(dim, num_classes))


def build_classifier(config: dict, num_classes: int, zero_shot: bool) -> CLIPClassifier:
    """With `zero_shot`, the head has the shape of zero_shot_head's prompt similarities."""
    from open_clip.model import _build_vision_tower

    visual = _build_vision_tower(config["embed_dim"], config["vision_cfg"], config.get("quick_gelu", False))
    encoder = CLIPImageEncoder(visual, vision_size(config))
    dim = config["embed_dim"]
    head = nn.Linear(dim, num_classes, bias=False) if zero_shot else linear_head(dim, num_classes)
    return CLIPClassifier(encoder, head)


@dataclass
class ClipBackbone:
    model: nn.Module
    config: dict
    tokenizer: object
    mean: torch.Tensor
    std: torch.Tensor


def build_clip(config: dict) -> nn.Module:
    import open_clip

    return open_clip.CLIP(**config)


def simple_tokenizer(config: dict):
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer(context_length=config["text_cfg"].get("context_length", 77))


def resolve_pretrained(model_name: str, pretrained: str, cache_dir, allow_download: bool) -> str:
    """What to hand open_clip as `pretrained`: a local file as is, a tag as is when downloads
    are allowed, or the tag's file in the cache when they are not."""
    import open_clip

    if Path(pretrained).is_file():
        return pretrained
    tag = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise WeightsUnavailable(
            f"open_clip pretrained {pretrained!r} is neither an existing file nor a tag of {model_name} (tags: {known})"
        )
    if allow_download:
        return pretrained
    from huggingface_hub import try_to_load_from_cache

    hub = tag.get("hf_hub", "")
    if hub:
        # 'org/repo/' names the repository's default weights file; 'org/repo/file' a file.
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir))
            if isinstance(hit, str):
                return hit
        url = f"https://huggingface.co/{repo}/resolve/main/{names[-1]}"
    else:
        url = tag["url"]
        cached = Path(cache_dir, os.path.basename(url))
        if cached.is_file():
            return str(cached)
    raise WeightsUnavailable(
        f"open_clip weights {model_name} ({pretrained}) are not in the cache {cache_dir} and downloads are off "
        f"(offline: true): download {url} and set this backbone's `pretrained:` to the file's path, "
        f"or run once with offline: false"
    )


OPEN_CLIP_CACHE = "resources/weights/open_clip"


def from_open_clip(spec: dict, allow_download: bool) -> ClipBackbone:
    import open_clip

    name, cache_dir = spec["model"], spec.get("cache", OPEN_CLIP_CACHE)
    pretrained, source = None, name.removeprefix("local-dir:")  # what a refusal names
    if weights.hub_repo(name):
        # open_clip's own hf-hub loader would ask the Hub first (and get_model_config ignores
        # cache_dir): read the cached snapshot folder with its local-dir loader instead.
        files = weights.hub_files(name, cache_dir, allow_download)
        name, source = f"local-dir:{files.folder}", files.weights
    elif not name.startswith("local-dir:"):
        if not spec.get("pretrained"):
            raise WeightsUnavailable(f"open_clip backbone {name} needs `pretrained:` (a tag or a file)")
        pretrained = source = resolve_pretrained(name, spec["pretrained"], cache_dir, allow_download)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, cache_dir=str(cache_dir), require_pretrained=True)
    except pickle.UnpicklingError:
        raise weights.refused_pickle(source) from None
    preprocess = open_clip.get_model_preprocess_cfg(model)
    return ClipBackbone(
        model=model.eval(),
        config=open_clip.get_model_config(name),
        tokenizer=open_clip.get_tokenizer(name),
        mean=torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32),
        std=torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32),
    )


def from_pretraining(path) -> ClipBackbone:
    saved = weights.load_weights(path, "pre-train the backbone again here (rule pretrain_backbone)")
    config = saved["architecture"]["clip"]
    model = build_clip(config)
    model.load_state_dict(saved["model"])
    return ClipBackbone(model.eval(), config, simple_tokenizer(config), saved["mean"], saved["std"])


def load_backbone(spec: dict, path, allow_download: bool) -> ClipBackbone:
    if spec.get("source") == "open_clip":
        return from_open_clip(spec, allow_download)
    if spec.get("source") == "clip_pretrain":
        return from_pretraining(path)
    raise ValueError(
        f"a CLIP model needs a backbone with source open_clip or clip_pretrain, not {spec.get('source')!r}"
    )


def image_classifier(backbone: ClipBackbone, num_classes: int, zero_shot: bool) -> CLIPClassifier:
    """A classifier whose image tower is the backbone's (copied, frozen)."""
    classifier = build_classifier(backbone.config, num_classes, zero_shot)
    classifier.encoder.visual.load_state_dict(backbone.model.visual.state_dict())
    for parameter in classifier.encoder.parameters():
        parameter.requires_grad = False
    return classifier


@torch.no_grad()
def prompt_embeddings(backbone: ClipBackbone, classes, prompt: str) -> torch.Tensor:
    tokens = backbone.tokenizer([prompt.format(species=c) for c in classes])
    return F.normalize(backbone.model.eval().encode_text(tokens).float(), dim=-1)


def zero_shot_head(backbone: ClipBackbone, classes, prompt: str) -> nn.Linear:
    """Cosine similarity to each class's prompt, times CLIP's learnt logit scale."""
    text = prompt_embeddings(backbone, classes, prompt)
    head = nn.Linear(text.shape[1], len(classes), bias=False)
    with torch.no_grad():
        head.weight.copy_(backbone.model.logit_scale.exp() * text)
    return head


class PromptContrast(nn.Module):
    """CLIP's training view of a labelled image set: similarity of each image to each class's
    caption, both towers trainable."""

    def __init__(self, clip: nn.Module, tokens: torch.Tensor, image_size: int):
        super().__init__()
        self.clip, self.image_size = clip, image_size
        self.register_buffer("tokens", tokens)

    def forward(self, images):
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear")
        image = F.normalize(self.clip.encode_image(images), dim=-1)
        text = F.normalize(self.clip.encode_text(self.tokens), dim=-1)
        return self.clip.logit_scale.exp() * image @ text.T


def clip_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss when many images share a caption: image->text over
    the captions, text->image over the batch with all of a caption's images as positives."""
    image_to_text = F.cross_entropy(logits, labels)
    present = labels.unique()
    log_p = logits[:, present].T.float().log_softmax(dim=1)
    positives = (labels[None, :] == present[:, None]).float()
    text_to_image = -(log_p * positives).sum(1) / positives.sum(1)
    return (image_to_text + text_to_image.mean()) / 2


def new_pretraining_model(settings: dict, classes) -> tuple[PromptContrast, dict]:
    config = {
        **settings["clip"],
        "vision_cfg": {**settings["clip"]["vision_cfg"], "image_size": settings["image_size"]},
    }
    clip = build_clip(config)
    tokens = simple_tokenizer(config)([settings["prompt"].format(species=c) for c in classes])
    return PromptContrast(clip, tokens, settings["image_size"]), config
