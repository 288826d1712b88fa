"""Where tensors run: the device, mixed precision on CUDA, memory layout and batched inference.

CPU runs stay in float32 unless a model sets `cpu_bfloat16`; either way the same config gives
the same numbers on every x86 CPU run (fishid/__init__.py caps oneDNN at AVX2). CUDA runs use
float16 autocast with a gradient scaler, as torchvision's reference scripts do.
"""

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def select_device() -> torch.device:
    if torch.cuda.is_available():
        log.info("training on %s with mixed precision", torch.cuda.get_device_name(0))
        return torch.device("cuda")
    log.info("CUDA is not usable here: training on the CPU with %d thread(s), float32", torch.get_num_threads())
    return torch.device("cpu")


def autocast(device: torch.device, cpu_bfloat16: bool = False):
    """float16 autocast on CUDA; on the CPU float32, or bfloat16 where a model asks for it
    (faster on CPUs with bfloat16 units, numbers slightly different from float32's)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bfloat16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Image batches go channels-last, the layout oneDNN and cuDNN convolutions are fastest in."""
    if tensor.dim() == 4:
        return tensor.to(device, memory_format=torch.channels_last)
    return tensor.to(device)


def prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return model.to(device, memory_format=torch.channels_last)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean.view(1, -1, 1, 1).to(images.device)) / std.view(1, -1, 1, 1).to(images.device)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images scaled to [0, 1]."""
    return images.float().div(255)


class Normalised:
    """uint8 images (N, 3, H, W) as a model reads them, floats normalised by `mean` and `std`,
    made a batch at a time as they are read (`split`, or rows by index): every image as floats
    at once is four times the images, and the 50,000-photo evaluation's peak (2.7 GB) was two
    such copies of its held-out photos."""

    def __init__(self, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.images, self.mean, self.std = images, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows) -> torch.Tensor:
        return normalise(to_float(self.images[rows]), self.mean, self.std)

    def split(self, size: int):
        # As Tensor.split: no images are one empty batch.
        return (self[start : start + size] for start in range(0, max(len(self), 1), size))


@torch.no_grad()
def predict_logits(model, inputs, device, batch_size=256) -> torch.Tensor:
    """The model's outputs for all `inputs` (a tensor or Normalised images), in large batches,
    as float32 on the CPU."""
    model.eval()
    outputs = []
    for chunk in inputs.split(batch_size):
        with autocast(device):
            outputs.append(model(to_device(chunk, device)).float().cpu())
    return torch.cat(outputs)
