"""Pre-trained weights from outside, kept in a local cache (resources/weights) that DVC can
version, so that jobs without network read them from disk.

- torchvision's ImageNet weights: the file name carries the first hex digits of its SHA-256
  (torch hub's convention), so a cached file is checked before it is used, and a user
  offline is told exactly which file to place where.
- models on the Hugging Face Hub: the files a library reads (a HubLayout), in huggingface_hub's
  cache layout (`<cache>/models--org--name/snapshots/<revision>/`): an open_clip model
  (`hf-hub:org/name`, e.g. BioCLIP), its open_clip_config.json and weights file, the layout
  open_clip's own hf-hub loader reads; the OWLv2 detector's transformers files
  (fishid.detect.owlv2).
"""

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.hub import load_state_dict_from_url
from torchvision.models import ResNet18_Weights

from fishid import steps
from fishid.download.store import sha256_of_file

log = logging.getLogger(__name__)


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
class HubLayout:
    """The files a library reads from one snapshot of a Hugging Face Hub repository."""

    what: str  # how messages name such a model ("open_clip model")
    files: tuple[str, ...]  # each one needed
    # The first of these that the repository has. The last one is the one asked for when a user
    # fetches the files by hand: open_clip's pickled state dict is older than its safetensors file.
    weights: tuple[str, ...]
    # Never read (pickles): where one is all the cache holds, the message says why it was passed over.
    refused: tuple[str, ...] = ()


OPEN_CLIP = HubLayout("open_clip model", (OPEN_CLIP_CONFIG,), OPEN_CLIP_WEIGHTS)


@dataclass(frozen=True)
class HubFiles:
    """A model's files in the Hugging Face cache, all in one snapshot folder: its layout's
    files, then its weights."""

    files: tuple[Path, ...]

    @property
    def weights(self) -> Path:
        return self.files[-1]

    @property
    def folder(self) -> Path:
        return self.files[0].parent


def hub_repo(model: str) -> str | None:
    """'org/name' of an `hf-hub:org/name` model, None for any other open_clip name."""
    return model[len(HF_HUB_PREFIX) :] if model.startswith(HF_HUB_PREFIX) else None


def hub_repo_folder(cache_dir, repo: str) -> Path:
    """huggingface_hub's folder of a model repository in a cache."""
    return Path(cache_dir, "models--" + repo.replace("/", "--"))


def cached_hub_files(repo: str, layout: HubLayout, cache_dir) -> dict[str, Path | None]:
    """The cached files of the repository's `main` revision (its layout's files, then its
    weights under the name found), None where missing. `main` is what refs/main names (a
    download), or a folder snapshots/main (files put by hand)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name):
        hit = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir))
        return Path(hit) if isinstance(hit, str) else None

    found = {name: cached(name) for name in layout.files}
    weights = next(((name, path) for name in layout.weights if (path := cached(name))), None)
    found.update([weights] if weights else [(" or ".join(layout.weights), None)])
    return found


def hub_instructions(repo: str, layout: HubLayout, cache_dir) -> str:
    folder = hub_repo_folder(cache_dir, repo)
    weights = " or ".join(reversed(layout.weights))
    wanted = " ".join([*layout.files, layout.weights[-1]])
    return (
        f"put {', '.join(layout.files)} and {weights} from https://huggingface.co/{repo}/tree/main into "
        f"{folder / 'snapshots' / 'main'}/, or, on a machine with network, run `hf download {repo} {wanted} "
        f"--cache-dir {cache_dir}` (or this pipeline with offline: false) and copy the folder {folder} it fills "
        f"to the same place here"
    )


def _download_hub_files(repo: str, layout: HubLayout, cache_dir) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    for name in layout.files:
        hf_hub_download(repo, name, cache_dir=str(cache_dir))
    for name in layout.weights:
        try:
            hf_hub_download(repo, name, cache_dir=str(cache_dir))
            return
        except EntryNotFoundError as error:
            # Not in the repository: try the next name. Not reachable: stop.
            if isinstance(error, LocalEntryNotFoundError) or name == layout.weights[-1]:
                raise


def _refused_in_cache(repo: str, layout: HubLayout, cache_dir) -> str:
    from huggingface_hub import try_to_load_from_cache

    there = [
        name for name in layout.refused if isinstance(try_to_load_from_cache(repo, name, cache_dir=str(cache_dir)), str)
    ]
    if not there:
        return ""
    return (
        f"; {' and '.join(there)} {'is' if len(there) == 1 else 'are'} there, but never read: a pickle, which "
        "loading would run as code"
    )


def hub_snapshot(model: str, repo: str, layout: HubLayout, cache_dir, allow_download: bool) -> HubFiles:
    """The files of `layout` of Hub repository `repo` ('org/name', which `model` names for the
    user) in `cache_dir`, downloaded once if allowed; missing offline, or not downloadable, a
    WeightsUnavailable that names the model, the folder to put its files in and the files."""
    from huggingface_hub import constants

    if repo.count("/") != 1 or "--" in repo or not all(repo.split("/")):
        raise ValueError(f"{model!r}: {repo!r} is not a Hugging Face Hub model name (org/name)")
    found = cached_hub_files(repo, layout, cache_dir)
    if all(found.values()):
        return HubFiles(tuple(found.values()))
    missing = ", ".join(name for name, path in found.items() if not path)
    if not allow_download or constants.HF_HUB_OFFLINE:
        why = "offline: true" if not allow_download else "HF_HUB_OFFLINE is set"
        raise WeightsUnavailable(
            f"{layout.what} {model} is not in the cache {cache_dir} (missing: {missing}"
            f"{_refused_in_cache(repo, layout, cache_dir)}) and downloads are off ({why}): "
            f"{hub_instructions(repo, layout, cache_dir)}"
        )
    try:
        _download_hub_files(repo, layout, cache_dir)
    except Exception as error:  # huggingface_hub's errors (network, HTTP, missing files) all end here
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise WeightsUnavailable(
            f"could not download {layout.what} {model} into {cache_dir} ({type(error).__name__}: {reason}): "
            f"{hub_instructions(repo, layout, cache_dir)}"
        ) from None
    found = cached_hub_files(repo, layout, cache_dir)
    if not all(found.values()):
        raise WeightsUnavailable(
            f"{layout.what} {model} was downloaded but its files are not in {cache_dir}: "
            f"{hub_instructions(repo, layout, cache_dir)}"
        )
    return HubFiles(tuple(found.values()))


def hub_files(model: str, cache_dir, allow_download: bool) -> HubFiles:
    """The config and weights of an `hf-hub:` open_clip model in `cache_dir` (hub_snapshot)."""
    repo = hub_repo(model)
    if not repo:
        raise ValueError(f"{model!r} is not an open_clip Hugging Face Hub name (hf-hub:org/name)")
    return hub_snapshot(model, repo, OPEN_CLIP, cache_dir, allow_download)


def hub_record(model: str, files: HubFiles) -> dict:
    """The snapshot a job will read: its revision, its folder, and each file's size and SHA-256."""
    return {
        "model": model,
        "revision": files.folder.name,
        "folder": str(files.folder),
        "files": {path.name: {"bytes": path.stat().st_size, "sha256": sha256_of_file(path)} for path in files.files},
    }


def write_hub_record(model: str, files: HubFiles, out) -> dict:
    """hub_record written to `out`: the weights rule's output."""
    record = hub_record(model, files)
    Path(out).write_text(json.dumps(record, indent=2) + "\n")
    return record


@steps.declare(
    "imagenet-weights",
    "torchvision's ImageNet ResNet-18 weights",
    steps.Option("cache_dir", "wildcards", key="cache"),
    steps.OFFLINE,
)
def imagenet_step(cache_dir, offline=False):
    """The `imagenet-weights` step (rule imagenet_weights)."""
    path = ensure_imagenet_weights(cache_dir, allow_download=not offline)
    log.info("verified %s", path)


@steps.declare(
    "open-clip-weights",
    "an open_clip model from the Hugging Face Hub",
    steps.par("model", help="hf-hub:org/name"),
    steps.Option("cache_dir", "wildcards", key="cache"),
    steps.OFFLINE,
    steps.out("out", key=""),
)
def open_clip_step(model, cache_dir, out, offline=False):
    """The `open-clip-weights` step (rule open_clip_weights): the files, and their record in `out`."""
    files = hub_files(model, cache_dir, allow_download=not offline)
    write_hub_record(model, files, out)
    log.info("%s: %s", model, ", ".join(str(path) for path in files.files))
