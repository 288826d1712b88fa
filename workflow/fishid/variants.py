"""What each model variant (a config's `arch`), each backbone source and each detector needs,
before any network is built (the defaults of the settings only some variants read are
config/schema.yaml's, fishid.config.with_training_defaults). It imports no PyTorch, so
that the configuration checks, the Snakefile and evaluation ask it; fishid.models.registry adds
how each variant's network is built.

A new variant is a row here (and its network in registry.py): the schema's `arch` enum is
checked against NEEDS by tests/unit/test_variants.py, as the backbone sources against
BACKBONE_KINDS, and the detectors (fishid.detect.detectors.DETECTORS) against TRAINED_DETECTORS.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    """recipe: the name (in fishid.train.recipes.RECIPES) of the function that trains it.
    backbone: the kind of backbone it starts from ("resnet18", "clip"), None for none. knn: it
    classifies by its nearest training images, so evaluation adds pair-distance and k-NN
    metrics of its embeddings. trained: False for a zero-shot model."""

    recipe: str
    backbone: str | None = None
    knn: bool = False
    trained: bool = True


NEEDS = {
    "ri": Needs("network"),
    "tl": Needs("frozen_head", backbone="resnet18"),
    "resnet18": Needs("network", backbone="resnet18"),
    "siamese": Needs("embedding", backbone="resnet18", knn=True),
    "triplet": Needs("embedding", backbone="resnet18", knn=True),
    "clip_zeroshot": Needs("clip", backbone="clip", trained=False),
    "clip_linear": Needs("clip", backbone="clip"),
}

# The kind of network each backbone source gives (a config's backbones.NAME.source).
BACKBONE_KINDS = {
    "pretrain": "resnet18",
    "imagenet": "resnet18",
    "clip_pretrain": "clip",
    "open_clip": "clip",
}


# Each detector (a config's detect.detector): True where the pipeline trains it (rule
# train_detector), False where it is used as it comes and its files are fetched (rule
# fetch_detector, with the settings under detect.<name>).
TRAINED_DETECTORS = {
    "synthetic": True,
    "owlv2": False,
}


def needs(arch: str) -> Needs:
    if arch not in NEEDS:
        raise ValueError(f"unknown arch {arch!r} (known: {', '.join(NEEDS)})")
    return NEEDS[arch]


def backbone_name(settings: dict) -> str | None:
    """The configured backbone a model starts from: None for a variant with none (RI) or for
    `backbone: random` (the same network, untrained)."""
    name = settings.get("backbone", "random")
    return None if needs(settings["arch"]).backbone is None or name == "random" else name
