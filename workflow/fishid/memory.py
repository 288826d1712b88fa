"""Memory (MB) each step that holds a dataset asks a cluster for: what it has always asked at
least, more as its data grows, and double on each retry, so that SLURM, which kills a job past
its `--mem`, does not kill a class's jobs.

The growth is measured: bench/results/scale.md gives each stage's peak RSS at 5,000, 20,000 and
50,000 photos (64 px), and tests/unit/test_memory.py holds every request above those peaks.
Per MB of the photos' pixels at the cache's size (3 x size x size bytes a photo), the image
cache peaked at 5.8 MB (the uint8 array, a float copy of the training rows for the channel
statistics, the index copy before it), training at 2.0 and evaluation at 3.2 (the cache, the
features or activations of every photo); the label-error queue at 0.12 MB a kept photo
(features, cross-validated probabilities and Datalab's neighbour graph).
"""

from dataclasses import dataclass
from pathlib import Path

# Python, PyTorch, the package and a model, before any data: about 1,000-1,200 MB measured.
BASE_MB = 1500


@dataclass(frozen=True)
class Need:
    floor_mb: int  # asked however small the data: the profile's figure before requests grew
    per_unit_mb: float  # above BASE_MB, per unit of the step's data
    unit: str


NEEDS = {
    "cache_images": Need(2000, 8.0, "MB of the dataset's pixels at the cache's size"),
    "pretrain_backbone": Need(8000, 3.0, "MB of the image cache it trains on"),
    "train_model": Need(8000, 3.0, "MB of the image cache it trains on"),
    "evaluate_model": Need(2000, 4.5, "MB of the image cache it predicts"),
    "label_issues": Need(8000, 0.16, "photos of the clean table"),
}


def request_mb(step: str, units: float, attempt: int = 1) -> int:
    """What `step` asks for holding `units` of its data (NEEDS[step].unit), on try `attempt`."""
    need = NEEDS[step]
    return int(max(need.floor_mb, BASE_MB + need.per_unit_mb * units)) * 2 ** (attempt - 1)


def table_rows(path) -> int:
    """Rows of a TSV with a header, counted without parsing it (a class's clean table is large)."""
    lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)


def pixels_mb(photos: int, size: int) -> float:
    return photos * 3 * size * size / 1e6


def file_mb(path) -> float:
    return Path(path).stat().st_size / 1e6
