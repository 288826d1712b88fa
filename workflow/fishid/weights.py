"""torchvision's ImageNet weights, kept in a local cache that DVC can version.

The file name carries the first hex digits of its SHA-256 (torch hub's convention), so a
cached file is checked before it is used, and a user offline is told exactly which file
to place where.
"""

from pathlib import Path
from urllib.parse import urlparse

from torch.hub import load_state_dict_from_url
from torchvision.models import ResNet18_Weights

from fishid.store import sha256_of_file


class WeightsUnavailable(FileNotFoundError):
    pass


def cached_path(cache_dir, weights=ResNet18_Weights.IMAGENET1K_V1) -> Path:
    return Path(cache_dir, Path(urlparse(weights.url).path).name)


def check_hash(path: Path) -> None:
    expected = path.stem.rsplit("-", 1)[-1]
    actual = sha256_of_file(path)
    if not actual.startswith(expected):
        raise WeightsUnavailable(
            f"{path} is corrupt or not the expected file: its SHA-256 starts with {actual[: len(expected)]}, "
            f"expected {expected}. Delete it and place the right file there."
        )


def ensure_imagenet_weights(cache_dir, allow_download: bool, weights=ResNet18_Weights.IMAGENET1K_V1) -> Path:
    """Path of the verified weights file, downloading it once if allowed."""
    path = cached_path(cache_dir, weights)
    if not path.exists():
        if not allow_download:
            raise WeightsUnavailable(
                f"ImageNet weights are not cached and downloads are off (offline: true): "
                f"download {weights.url} and place it at {path}"
            )
        try:
            load_state_dict_from_url(weights.url, model_dir=str(cache_dir), check_hash=True, weights_only=True)
        except OSError as error:
            raise WeightsUnavailable(
                f"could not download {weights.url} ({error}): download it yourself and place it at {path}"
            ) from error
    check_hash(path)
    return path
