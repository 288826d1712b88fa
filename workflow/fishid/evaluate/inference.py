"""Load any trained variant from its weights file and predict, or embed, a cache's images.

Every variant loads as a module from normalised images to class logits (softmax gives the
scores), with an `embed` view where it has one: the metric embedding of siamese and triplet
networks, CLIP's unit-length image embedding, ResNet-18's 512 pooled features, the RI
network's last hidden layer.
"""

import numpy as np
import pandas as pd
import torch
from torch import nn

from fishid.config import with_training_defaults
from fishid.models import openset
from fishid.models import registry as models
from fishid.models.weights import load_weights
from fishid.runtime import Normalised, predict_logits
from fishid.train import imagecache

CPU = torch.device("cpu")
# What to do about a weights.pt that load_weights refuses.
RETRAIN = (
    "it is not weights this pipeline wrote; train the model again here, or get its weights.pt from a source you trust"
)


def load_model(settings: dict, weights_path) -> tuple[nn.Module, dict]:
    """(model in eval mode, the weights file's dict: classes, mean, std and, where the model
    has them, threshold, threshold_label, distance_threshold, architecture)."""
    weights = load_weights(weights_path, RETRAIN)
    model = models.build(with_training_defaults(settings), len(weights["classes"]), weights.get("architecture"))
    model.load_state_dict(weights["model"])
    return model.eval(), weights


def model_inputs(images: torch.Tensor, weights: dict) -> Normalised:
    """uint8 images (N, 3, H, W) as the model reads them: floats normalised by its statistics."""
    return Normalised(images, weights["mean"], weights["std"])


def scores_of(model: nn.Module, weights: dict, images: torch.Tensor, device=CPU, batch_size=256) -> np.ndarray:
    """Softmax scores (N x the model's classes) of uint8 images."""
    logits = predict_logits(model, model_inputs(images, weights), device, batch_size)
    return torch.softmax(logits, dim=1).numpy()


def labels_of(scores: np.ndarray, weights: dict) -> np.ndarray:
    """The predicted labels: the top class, or the model's own threshold label (its "other")
    where a threshold open-set model's top score is below its threshold."""
    return openset.apply_threshold(
        scores, weights["classes"], weights.get("threshold"), weights.get("threshold_label", "other")
    )


def predict_loaded(model: nn.Module, weights: dict, cache: dict, role: str, device=CPU) -> pd.DataFrame:
    """sha256, split, label, predicted, score:<class> for each image of `role`; a threshold
    model's score columns are its known classes only."""
    images, labels = imagecache.subset(cache, role)
    scores = scores_of(model, weights, images, device)
    table = pd.DataFrame(
        {
            "sha256": [s for s, r in zip(cache["sha256"], cache["split"]) if r == role],
            "split": role,
            "label": [cache["classes"][i] for i in labels.tolist()],
            "predicted": labels_of(scores, weights),
        }
    )
    for i, name in enumerate(weights["classes"]):
        table[f"score:{name}"] = scores[:, i].round(6)
    return table


def predict(settings: dict, weights_path, cache: dict, role: str, device=CPU) -> pd.DataFrame:
    """predict_loaded for the model in `weights_path`."""
    return predict_loaded(*load_model(settings, weights_path), cache, role, device)


class Embedder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        if hasattr(self.model, "embed"):
            return self.model.embed(x)
        # torchvision's ResNet: everything but the final layer.
        head, self.model.fc = self.model.fc, nn.Identity()
        try:
            return self.model(x)
        finally:
            self.model.fc = head


def embed_loaded(model: nn.Module, weights: dict, cache: dict, role: str, device=CPU) -> np.ndarray:
    """(N, dim) float32 embeddings of the images of `role`, in the cache's order (the order of
    `predict`'s rows). Siamese/triplet embeddings are unit vectors: distances lie in [0, 2]."""
    images, _ = imagecache.subset(cache, role)
    return predict_logits(Embedder(model), model_inputs(images, weights), device).numpy()


def embed(settings: dict, weights_path, cache: dict, role: str, device=CPU) -> np.ndarray:
    """embed_loaded for the model in `weights_path`."""
    return embed_loaded(*load_model(settings, weights_path), cache, role, device)
