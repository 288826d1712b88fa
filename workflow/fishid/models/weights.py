"""Pre-trained weights from outside, kept in a local cache (resources/weights) that DVC can
version, so that jobs without network read them from disk.

- torchvision's ImageNet weights: the file name carries the first hex digits of its SHA-256
  (torch hub's convention), so a cached file is checked before it is used, and a user
  offline is told exactly which file to place where.
- open_clip models on the Hugging Face Hub (`hf-hub:org/name`, e.g. BioCLIP): the
  repository's open_clip_config.json and weights file, in huggingface_hub's cache layout
  (`<cache>/models--org--name/snapshots/<revision>/`), the layout open_clip's own hf-hub
  loader reads.
"""

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.hub import load_state_dict_from_url
from torchvision.models import ResNet18_Weights

from fishid.download.store import sha256_of_file


class WeightsUnavailable(FileNotFoundError):
    pass


TRUSTED_SOURCE = "replace it with the file from a source you trust"


def refused_pickle(path, remedy: str = TRUSTED_SOURCE) -> ValueError:
    """The error for a file that torch refused to load as weights only. torch's own message
    suggests weights_only=False, which would run the file's code: this one says what to do."""
    return ValueError(
        f"{path}: refused: this file holds Python objects beyond tensors and plain values, which loading "
        f"would run as code; {remedy}"
    )


def load_weights(path, remedy: str = TRUSTED_SOURCE):
    """torch.load of tensors and plain values only: any other file is refused (refused_pickle)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise refused_pickle(path, remedy) from None


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
        except pickle.UnpicklingError:
            raise refused_pickle(path) from None
        except OSError as error:
            raise WeightsUnavailable(
                f"could not download {weights.url} ({error}): download it yourself and place it at {path}"
            ) from error
    check_hash(path)
    return path


HF_HUB_PREFIX = "hf-hub:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
# open_clip's own order (pretrained.download_pretrained_from_hf): the safetensors file when
# the repository has one, else the pickled state dict.
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class HubFiles:
    """An open_clip model's files in the Hugging Face cache: one snapshot folder."""

    config: Path
    weights: Path

    @property
    def folder(self) -> Path:
        return self.config.parent


def hub_repo(model: str) -> str | None:
    """'org/name' of an `hf-hub:org/name` model, None for any other open_clip name."""
    return model[len(HF_HUB_PREFIX) :] if model.startswith(HF_HUB_PREFIX) else None


def hub_repo_folder(cache_dir, repo: str) -> Path:
    """huggingface_hub's folder of a model repository in a cache."""
    return Path(cache_dir, "models--" + repo.replace("/", "--"))


def cached_hub_files(repo: str, cache_dir) -> tuple[Path | None, Path | None]:
    """The cached (config, weights) of the repository's `main` revision, None where missing.
    `main` is what refs/main names (a download), or a folder snapshots/main (files put by hand)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name):
        hit = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir))
        return Path(hit) if isinstance(hit, str) else None

    config = cached(OPEN_CLIP_CONFIG)
    weights = next((path for name in OPEN_CLIP_WEIGHTS if (path := cached(name))), None)
    return config, weights


def hub_instructions(model: str, cache_dir) -> str:
    repo = hub_repo(model)
    folder = hub_repo_folder(cache_dir, repo)
    return (
        f"put {OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS[1]} (or {OPEN_CLIP_WEIGHTS[0]}) from "
        f"https://huggingface.co/{repo}/tree/main into {folder / 'snapshots' / 'main'}/, or, on a machine "
        f"with network, run `hf download {repo} {OPEN_CLIP_CONFIG} {OPEN_CLIP_WEIGHTS[1]} --cache-dir "
        f"{cache_dir}` (or this pipeline with offline: false) and copy the folder {folder} it fills to the same "
        f"place here"
    )


def _download_hub_files(repo: str, cache_dir) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    hf_hub_download(repo, OPEN_CLIP_CONFIG, cache_dir=str(cache_dir))
    for name in OPEN_CLIP_WEIGHTS:
        try:
            hf_hub_download(repo, name, cache_dir=str(cache_dir))
            return
        except EntryNotFoundError as error:
            # Not in the repository: try the next name. Not reachable: stop.
            if isinstance(error, LocalEntryNotFoundError) or name == OPEN_CLIP_WEIGHTS[-1]:
                raise


def hub_files(model: str, cache_dir, allow_download: bool) -> HubFiles:
    """The config and weights of an `hf-hub:` open_clip model in `cache_dir`, downloaded
    once if allowed; missing offline, or not downloadable, a WeightsUnavailable that names
    the model, the folder to put its files in and the files."""
    from huggingface_hub import constants

    repo = hub_repo(model)
    if not repo or repo.count("/") != 1:
        raise ValueError(f"{model!r} is not an open_clip Hugging Face Hub name (hf-hub:org/name)")
    config, weights = cached_hub_files(repo, cache_dir)
    if config and weights:
        return HubFiles(config, weights)
    missing = ", ".join(
        name for name, path in ((OPEN_CLIP_CONFIG, config), (" or ".join(OPEN_CLIP_WEIGHTS), weights)) if not path
    )
    if not allow_download or constants.HF_HUB_OFFLINE:
        why = "offline: true" if not allow_download else "HF_HUB_OFFLINE is set"
        raise WeightsUnavailable(
            f"open_clip model {model} is not in the cache {cache_dir} (missing: {missing}) and downloads are "
            f"off ({why}): {hub_instructions(model, cache_dir)}"
        )
    try:
        _download_hub_files(repo, cache_dir)
    except Exception as error:  # huggingface_hub's errors (network, HTTP, missing files) all end here
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise WeightsUnavailable(
            f"could not download open_clip model {model} into {cache_dir} ({type(error).__name__}: {reason}): "
            f"{hub_instructions(model, cache_dir)}"
        ) from None
    config, weights = cached_hub_files(repo, cache_dir)
    if not (config and weights):
        raise WeightsUnavailable(
            f"open_clip model {model} was downloaded but its files are not in {cache_dir}: "
            f"{hub_instructions(model, cache_dir)}"
        )
    return HubFiles(config, weights)


def write_hub_record(model: str, files: HubFiles, out) -> dict:
    """What a training job will read, with sizes and SHA-256: the weights rule's output."""
    record = {
        "model": model,
        "revision": files.folder.name,
        "folder": str(files.folder),
        "files": {
            path.name: {"bytes": path.stat().st_size, "sha256": sha256_of_file(path)}
            for path in (files.config, files.weights)
        },
    }
    Path(out).write_text(json.dumps(record, indent=2) + "\n")
    return record
