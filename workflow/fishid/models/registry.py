"""The model variants and their networks: the study's random-initialisation CNN, ResNet-18 with
a chosen backbone, and embedding networks (siamese, triplet) that classify by their nearest
training images; CLIP networks live in clip.py.

NETWORKS (at the end) says how each variant's network is built; what the variant needs (its
training recipe, what it starts from, how it classifies) is fishid.variants', which
imports no PyTorch. Everything else asks these instead of keeping its own list of archs.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from fishid import variants
from fishid.models import clip as clip_models
from fishid.models.embeddings import batch_hard_triplet_loss as triplet
from fishid.models.embeddings import contrastive_loss as contrastive
from fishid.models.heads import FeatureScaler
from fishid.models.weights import load_weights


class StudyCNN(nn.Module):
    """The study's RI network (its script's Net96): 3 conv layers (5x5, 3x3, 3x3, stride 1) of
    70, 110 and 180 channels, each followed by ReLU and max-pool (3, stride 2), then fully
    connected layers of 2000 and 200 units with ReLU, and the output layer.

    `init`: "kaiming" (He et al. 2015) or "pytorch" (each layer's default, what the study's
    script had). PyTorch's default halves the signal at every layer: at initialisation the
    logits of different photos differ by under 0.01 (about 1.5 with kaiming), so SGD at the
    study's learning rate first fits the class shares and predicts the majority class for
    epochs."""

    def __init__(
        self, num_classes: int, image_size: int = 96, channels=(70, 110, 180), hidden=(2000, 200), init="kaiming"
    ):
        super().__init__()
        layers, in_channels = [], 3
        for out_channels, kernel in zip(channels, (5, 3, 3)):
            layers += [nn.Conv2d(in_channels, out_channels, kernel), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        side = image_size
        for kernel in (5, 3, 3):
            side = (side - kernel + 1 - 3) // 2 + 1
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * side * side, hidden[0]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[1], num_classes),
        )
        if init == "kaiming":
            init_kaiming(self)
        elif init != "pytorch":
            raise ValueError(f"unknown init {init!r} (known: kaiming, pytorch)")

    def forward(self, x):
        return self.classifier(self.features(x))

    def embed(self, x):
        """What the last layer sees (the second hidden layer's activations)."""
        return self.classifier[:-1](self.features(x))


def init_kaiming(model: nn.Module) -> None:
    """Weights whose outputs keep their inputs' scale through each ReLU layer, zero biases."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)


def backbone_resnet18() -> nn.Module:
    """ResNet-18 whose forward returns the 512 pooled features (fc replaced by identity)."""
    model = resnet18(weights=None)
    model.fc = nn.Identity()
    return model


def load_backbone_state(model: nn.Module, path) -> None:
    """Load backbone weights (our own pre-training or torchvision's ImageNet file), ignoring any fc."""
    state = load_weights(path)
    state = state.get("model", state)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model.load_state_dict(state)


def projector(in_features: int, embedding_dim: int, hidden: int = 256) -> nn.Sequential:
    return nn.Sequential(
        FeatureScaler(in_features),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, embedding_dim),
    )


class KNNHead(nn.Module):
    """k-nearest-neighbour classifier over a gallery of training embeddings.

    Votes are weighted by inverse distance; the output is the log of each class's share of
    the votes, so that softmax of it gives the shares back and gradients still reach the
    embedding (saliency maps work)."""

    def __init__(self, num_classes: int, k: int):
        super().__init__()
        self.num_classes, self.k = num_classes, k
        self.register_buffer("gallery", torch.zeros(0))
        self.register_buffer("gallery_labels", torch.zeros(0, dtype=torch.long))

    def set_gallery(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        self.gallery = embeddings.detach().float().clone()
        self.gallery_labels = labels.detach().clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The gallery's size is only known from the saved file.
        for name in ("gallery", "gallery_labels"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, embeddings):
        distances = torch.cdist(embeddings.float(), self.gallery.to(embeddings.device))
        k = min(self.k, self.gallery.shape[0])
        nearest, index = distances.topk(k, dim=1, largest=False)
        weights = 1.0 / (nearest + 1e-6)
        votes = torch.zeros(embeddings.shape[0], self.num_classes, device=embeddings.device)
        votes = votes.scatter_add(1, self.gallery_labels.to(embeddings.device)[index], weights)
        return (votes / votes.sum(1, keepdim=True)).clamp_min(1e-12).log()


class EmbeddingClassifier(nn.Module):
    """An encoder (ResNet-18 trunk) and a projection to a unit-length embedding: the shared
    branch of a siamese or triplet network. Classifies by k-NN over the training images."""

    def __init__(self, num_classes: int, embedding_dim: int, k: int, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else backbone_resnet18()
        self.projector = projector(512, embedding_dim)
        self.knn = KNNHead(num_classes, k)

    def project(self, features):
        return F.normalize(self.projector(features), dim=1)

    def embed(self, x):
        return self.project(self.encoder(x))

    def forward(self, x):
        return self.knn(self.embed(x))


def study_cnn(settings: dict, num_classes: int, architecture=None, backbone=None) -> StudyCNN:
    return StudyCNN(num_classes, settings["image_size"], settings["channels"], settings["hidden"], settings["init"])


def resnet18_classifier(settings: dict, num_classes: int, architecture=None, backbone=None) -> nn.Module:
    model = backbone if backbone is not None else backbone_resnet18()
    model.fc = nn.Linear(512, num_classes)
    return model


def embedding_classifier(settings: dict, num_classes: int, architecture=None, backbone=None) -> EmbeddingClassifier:
    return EmbeddingClassifier(num_classes, settings["embedding_dim"], settings["knn_k"], backbone)


def clip_classifier(
    settings: dict, num_classes: int, architecture=None, backbone=None, zero_shot=False
) -> clip_models.CLIPClassifier:
    if backbone is not None:
        return clip_models.image_classifier(backbone, num_classes, zero_shot)
    # Evaluation has no backbone: the weights file says what the image tower was.
    return clip_models.build_classifier(architecture["clip"], num_classes, zero_shot)


@dataclass(frozen=True)
class Variant:
    """One model variant (a config's `arch`): what it needs (fishid.variants.Needs:
    recipe, backbone, knn, trained) and

    build(settings, num_classes, architecture=None, backbone=None): the untrained network;
    training hands it the backbone it starts from, evaluation the weights file's
    `architecture`. loss: the metric learning loss of an embedding network."""

    arch: str
    build: Callable[..., nn.Module]
    recipe: str
    backbone: str | None = None
    knn: bool = False
    trained: bool = True
    loss: Callable | None = None


NETWORKS = {
    "ri": (study_cnn, None),
    "tl": (resnet18_classifier, None),
    "resnet18": (resnet18_classifier, None),
    "siamese": (embedding_classifier, contrastive),
    "triplet": (embedding_classifier, triplet),
    "clip_zeroshot": (partial(clip_classifier, zero_shot=True), None),
    "clip_linear": (clip_classifier, None),
}
VARIANTS = {
    arch: Variant(arch, build, loss=loss, **vars(variants.needs(arch))) for arch, (build, loss) in NETWORKS.items()
}


def variant(arch: str) -> Variant:
    variants.needs(arch)
    return VARIANTS[arch]


def build(settings: dict, num_classes: int, architecture: dict | None = None) -> nn.Module:
    """The untrained network a model's settings describe (weights are loaded by the caller).
    `architecture` is what the weights file says of a network built from a library config."""
    return variant(settings["arch"]).build(settings, num_classes, architecture)
