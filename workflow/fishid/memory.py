"""Memory (MB) each step that holds a dataset asks a cluster for: what it has always asked at
least, more as its data grows, and double on each retry, so that SLURM, which kills a job past
its `--mem`, does not kill a class's jobs.

The growth is measured: bench/results/scale.md gives each stage's peak RSS at 5,000, 20,000 and
50,000 photos (64 px), and tests/unit/test_memory.py holds every request above those peaks.
Since the steps read their images from mapped files (the cache's scratch file, the cache itself),
their RSS counts those files' pages, which the kernel drops as it needs: from 20,000 to 50,000
photos the image cache's peak no longer grew, training's grew by 0.9 MB per MB of the caches
written and evaluation's by 0.6 (projected to 10 million photos: 101 and 71 GB); the
label-error queue's by nothing measurable (under 2 GB: its 256 MB chunks of photos outweigh its
features, probabilities and neighbour graph at these sizes, a few KB a photo: tens of GB at 10
million). The rates below keep a margin over those, and ask under a 256 GB node at 10 million
photos.
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
    "cache_images": Need(2000, 0.25, "MB of the dataset's pixels at the cache's size"),
    "pretrain_backbone": Need(8000, 3.0, "MB of the image cache it trains on"),
    "train_model": Need(8000, 1.2, "MB of the image cache it trains on"),
    "evaluate_model": Need(2000, 1.5, "MB of the image cache it predicts"),
    "label_issues": Need(8000, 0.015, "photos of the clean table"),
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
