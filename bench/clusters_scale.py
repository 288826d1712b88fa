"""The label-issue queue's clusters (HDBSCAN) at a class's scale: CPU seconds of HDBSCAN over
every photo against the sampled path (fishid.review.label_issues.clusters: past CLUSTER_SAMPLE
photos, HDBSCAN on a random sample, the others joined to their nearest sampled photo).

Features: 512-dimensional, 200 species as Gaussian blobs (a backbone's features of a genus-sized
class stand-in). Results go to bench/results/clusters_scale.json and .md.

    python bench/clusters_scale.py                  # about 2 minutes on 2 cores
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from output import write_results  # noqa: E402

from fishid.review import label_issues  # noqa: E402

SIZES = (10_000, 20_000, 40_000)


def features(n: int, rng) -> np.ndarray:
    centres = rng.normal(size=(200, 512)) * 3
    return (centres[rng.integers(0, 200, n)] + rng.normal(size=(n, 512))).astype(np.float32)


def cpu_seconds(x: np.ndarray, sample: int) -> float:
    start = time.process_time()
    label_issues.clusters(x, 10, sample=sample)
    return time.process_time() - start


def main():
    load = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    cpu_seconds(features(2_000, rng), 10**9)  # imports and first calls, off the clock
    rows = []
    for n in SIZES:
        x = features(n, rng)
        rows.append(
            {"photos": n, "whole": cpu_seconds(x, 10**9), "sampled": cpu_seconds(x, label_issues.CLUSTER_SAMPLE)}
        )
        print(rows[-1], flush=True)
    lines = [
        f"# HDBSCAN over every photo against a sample of {label_issues.CLUSTER_SAMPLE:,} (CPU seconds)",
        "",
        f"Load average (1 min) before {load:.1f}, after {os.getloadavg()[0]:.1f}: on a busy machine the same "
        "call varies by a factor of two or three; the trend across sizes is what to read.",
        "",
        "| photos | every photo | sampled |",
        "| ---: | ---: | ---: |",
        *(f"| {r['photos']:,} | {r['whole']:.1f} | {r['sampled']:.1f} |" for r in rows),
    ]
    write_results("clusters_scale", {"rows": rows, "sample": label_issues.CLUSTER_SAMPLE}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
