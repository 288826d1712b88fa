"""The networks: the study's random-initialisation CNN and ResNet-18 with a chosen backbone."""

import torch
from torch import nn
from torchvision.models import resnet18


class StudyCNN(nn.Module):
    """The study's RI network: 3 conv layers (5x5, 3x3, 3x3, stride 1), each followed by ReLU
    and max-pool (3, stride 2), then 3 fully connected layers."""

    def __init__(self, num_classes: int, image_size: int = 96, channels=(32, 64, 128), hidden=(512, 128)):
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

    def forward(self, x):
        return self.classifier(self.features(x))


def backbone_resnet18() -> nn.Module:
    """ResNet-18 whose forward returns the 512 pooled features (fc replaced by identity)."""
    model = resnet18(weights=None)
    model.fc = nn.Identity()
    return model


def load_backbone_state(model: nn.Module, path) -> None:
    """Load backbone weights (our own pre-training or torchvision's ImageNet file), ignoring any fc."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model.load_state_dict(state)


def build(settings: dict, num_classes: int) -> nn.Module:
    """The untrained network a model's settings describe (weights are loaded by the caller)."""
    if settings["arch"] == "ri":
        return StudyCNN(num_classes, settings["image_size"], settings["channels"], settings["hidden"])
    model = backbone_resnet18()
    model.fc = nn.Linear(512, num_classes)
    return model
