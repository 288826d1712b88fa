"""Near-duplicate search: time at 10,000 and 100,000 hashes, and what the hash can tell apart.

Search time: 128-bit hashes (two uint64 words), `max_distance` 12 (the default), with 5 %
planted near copies (up to 12 bits flipped). Two hash distributions:
  uniform   every bit a fair coin
  skewed    each bit position has its own probability of being set (Beta(0.7, 0.7)):
            lopsided bits make the index's buckets uneven, as real hashes do
The all-pairs comparison (vectorised numpy, the reference the tests check against) is timed
at 10,000 for comparison, and at 100,000 with --all-pairs (a few minutes).

Hash quality on the seed-mini photos (../shared/data/seed-mini): the distance between
every two different photos, and between each photo and a copy of it re-encoded (JPEG
quality 70), resized to 70 % and cropped by 0 to 3 % at the top and left: how many copies
`max_distance` finds at each crop.

The clean stage's decisions across 100,000 decoded images (the search included) are timed too.

Results go to bench/results/near_duplicates.json and .md.

    python bench/near_duplicates.py           # about a minute on 2 cores
"""

import argparse
import io
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "bench"))

from output import write_results  # noqa: E402

from fishid.clean import stage as clean  # noqa: E402
from fishid.clean.decode import decode  # noqa: E402
from fishid.clean.near_duplicates import (  # noqa: E402
    distance,
    hash_words,
    pairs_within,
    pairs_within_brute_force,
    perceptual_hash,
)

SEED_MINI = ROOT.parent / "shared" / "data" / "seed-mini"


def synthetic_hashes(n: int, kind: str, rng, planted_share=0.05, max_flips=12) -> np.ndarray:
    if kind == "uniform":
        words = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)
    else:
        p = rng.beta(0.7, 0.7, size=128)
        bits = rng.random((n, 128)) < p
        words = np.packbits(bits, axis=1).view(">u8").astype(np.uint64)
    planted = int(n * planted_share)
    sources = rng.integers(planted, n, size=planted)
    words[:planted] = words[sources]
    for row in range(planted):
        for bit in rng.choice(128, rng.integers(0, max_flips + 1), replace=False):
            words[row, bit // 64] ^= np.uint64(1 << (bit % 64))
    return words


def timed(function, *args, repeat=1):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def search_times(sizes, max_distance, all_pairs_limit, rng) -> list[dict]:
    rows = []
    for kind in ("uniform", "skewed"):
        for n in sizes:
            words = synthetic_hashes(n, kind, rng)
            seconds, (i, _, _) = timed(pairs_within, words, max_distance, repeat=3 if n <= 10_000 else 1)
            row = {"hashes": n, "distribution": kind, "indexed_s": round(seconds, 3), "pairs_found": int(len(i))}
            if n <= all_pairs_limit:
                brute_seconds, (bi, _, _) = timed(pairs_within_brute_force, words, max_distance)
                assert len(bi) == len(i), "indexed and all-pairs searches disagree"
                row["all_pairs_s"] = round(brute_seconds, 3)
            rows.append(row)
            print(row, flush=True)
    return rows


def decision_inputs(n: int, rng, species, size=(640, 480)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The clean stage's inputs to its decisions across images, for n synthetic decoded images
    of `size`: 3 % near copies, species in turn, pairs of photos sharing an occurrence."""
    words = synthetic_hashes(n, "uniform", rng, planted_share=0.03)
    shas = [f"{i:064x}" for i in range(n)]
    decoded = pd.DataFrame(
        {
            "sha256": shas,
            "kept": True,
            "reason": "",
            "width": size[0],
            "height": size[1],
            "format": "JPEG",
            "mode": "RGB",
            "frames": 1,
            "phash": [f"{a:016x}{b:016x}" for a, b in words],
            "chroma": 40.0,
            "midtone_chroma": 40.0,
            "colours": 900,
            "flat_fraction": 0.01,
            "derived_path": "",
        }
    )
    links = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "sha256": shas,
            "path": "",
            "taxon": np.array(species)[np.arange(n) % len(species)],
            "occurrence_id": [f"occ{i // 4}" if i % 4 in (0, 2) else "" for i in range(n)],
            "basis_of_record": "HUMAN_OBSERVATION",
            "preparations": "",
            "source_split": "",
        }
    )
    return decoded, links


def decisions_time(n: int, rng) -> dict:
    """The clean stage's decisions across images (exclusions, filters, near-duplicate search,
    groups, conflicts, keeping the largest copy) for n decoded images, 3 % near copies and
    pairs of photos sharing an occurrence."""
    decoded, links = decision_inputs(n, rng, ["Amphiprion clarkii", "Amphiprion perideraion"])
    settings = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["clean"]
    seconds, table = timed(clean.decide, links, decoded, {}, settings)
    reasons = table.loc[~table["kept"], "reason"].str.split(":").str[0].value_counts().to_dict()
    result = {"images": n, "seconds": round(seconds, 2), "dropped": reasons}
    print(result, flush=True)
    return result


def near_copy(image: Image.Image, crop: float) -> Image.Image:
    w, h = image.size
    image = image.crop((round(w * crop), round(h * crop), w, h))
    image = image.resize((round(image.width * 0.7), round(image.height * 0.7)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return decode(buffer.getvalue(), 10**9, at_least=128).image


def hash_quality(max_distance: int) -> dict:
    paths = sorted(SEED_MINI.rglob("*.jpg"))
    if not paths:
        return {"skipped": f"no photos at {SEED_MINI}"}
    images = [decode(p.read_bytes(), 10**9, at_least=128).image for p in paths]
    words = hash_words([perceptual_hash(im) for im in images])
    different = [int(distance(words[a], words[b])) for a, b in itertools.combinations(range(len(words)), 2)]
    result = {
        "photos": len(paths),
        "different_photos_min_distance": min(different),
        "different_photos_pairs_within_max_distance": sum(d <= max_distance for d in different),
        "copies": [],
    }
    for crop in (0.0, 0.005, 0.01, 0.015, 0.02, 0.03):
        copies = hash_words([perceptual_hash(near_copy(im, crop)) for im in images])
        d = distance(words, copies)
        result["copies"].append(
            {
                "crop": crop,
                "max_distance_seen": int(d.max()),
                "median": float(np.median(d)),
                "found": int((d <= max_distance).sum()),
                "of": len(d),
            }
        )
        print(result["copies"][-1], flush=True)
    return result


def markdown(report: dict) -> str:
    lines = [
        "# Near-duplicate search",
        "",
        f"`{report['command']}` on {report['machine']} (shared, so timings are noisy).",
        f"128-bit hashes, max_distance {report['max_distance']}, 5 % planted near copies.",
        "",
        "| hashes | distribution | indexed search (s) | all pairs (s) | pairs found |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for row in report["search"]:
        all_pairs = row.get("all_pairs_s", "not run")
        lines.append(
            f"| {row['hashes']:,} | {row['distribution']} | {row['indexed_s']} | {all_pairs} | {row['pairs_found']:,} |"
        )
    decisions = report["decisions"]
    lines += [
        "",
        f"The clean stage's decisions across {decisions['images']:,} decoded images (filters, this search, "
        f"groups, conflicts, near duplicates) took {decisions['seconds']} s; dropped: {decisions['dropped']}.",
    ]
    quality = report["hash_quality"]
    if "copies" in quality:
        lines += [
            "",
            f"Hash quality on {quality['photos']} seed-mini photos: two different photos are at least "
            f"{quality['different_photos_min_distance']} bits apart "
            f"({quality['different_photos_pairs_within_max_distance']} pairs within max_distance).",
            "Copies re-encoded (JPEG 70), resized to 70 % and cropped at the top and left:",
            "",
            "| crop | largest distance | median | found |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {c['crop']:.1%} | {c['max_distance_seen']} | {c['median']:g} | {c['found']}/{c['of']} |"
            for c in quality["copies"]
        ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-distance", type=int, default=12)
    parser.add_argument("--all-pairs", action="store_true", help="also time all pairs at 100,000")
    args = parser.parse_args()
    rng = np.random.default_rng(2018)
    report = {
        "command": "python bench/near_duplicates.py" + (" --all-pairs" if args.all_pairs else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "max_distance": args.max_distance,
        "search": search_times([10_000, 100_000], args.max_distance, 100_000 if args.all_pairs else 10_000, rng),
        "decisions": decisions_time(100_000, rng),
        "hash_quality": hash_quality(args.max_distance),
    }
    write_results("near_duplicates", report, markdown(report))


if __name__ == "__main__":
    main()
