"""Cleaning throughput on real-size JPEGs, on 2 cores (the clean stage's threads).

Real-size photos are made from the seed-mini photos (../shared/data/seed-mini): each is
enlarged to a camera size and given its own sensor-like noise (so that no two files are
alike and JPEG has real detail to code), saved at quality 90. Sizes:
  web      1024 x 768   (FishBase, GBIF thumbnails of "original")
  2k       2048 x 1536  (iNaturalist "original")
  camera   4032 x 3024  (a 12 MP phone photo)
Each set runs through `fishid.clean.stage.run` (decode, verify, orient, convert, measure, hash,
write the derived copy, then every decision across images) with the demo's clean settings
and max_side 320, and the per-image step is also timed alone on one core with and
without JPEG draft decoding (decoding at a reduced DCT scale).

Results go to bench/results/cleaning.json and .md.

    python bench/cleaning.py          # about two minutes
"""

import argparse
import os
import platform
import sys
import tempfile
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

from fishid.clean import near_duplicates, photo_filters  # noqa: E402
from fishid.clean import stage as clean  # noqa: E402
from fishid.clean.decode import decode  # noqa: E402
from fishid.download import store  # noqa: E402
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, write_table  # noqa: E402

SEED_MINI = ROOT.parent / "shared" / "data" / "seed-mini"
SIZES = {"web": (1024, 768), "2k": (2048, 1536), "camera": (4032, 3024)}


def real_size_jpegs(size, count, store_root, rng) -> pd.DataFrame:
    sources = sorted(SEED_MINI.rglob("*.jpg"))
    if not sources:
        raise SystemExit(f"no photos at {SEED_MINI}: the benchmark needs the seed-mini photos")
    rows = []
    for index in range(count):
        path = sources[index % len(sources)]
        with Image.open(path) as photo:
            big = photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        noise = rng.normal(0, 6, (size[1], size[0], 1)).astype(np.float32)
        pixels = np.clip(np.asarray(big, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        data = _jpeg(Image.fromarray(pixels))
        sha256, relative = store.put(store_root, data, "jpg")
        taxon = path.parent.name.replace("_", " ")
        rows.append({"record_id": f"bench:{index}", "taxon": taxon, "sha256": sha256, "path": relative})
    return pd.DataFrame(rows)


def _jpeg(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def stage_throughput(images: pd.DataFrame, work: Path, settings: dict, threads: int) -> dict:
    records = images[["record_id", "taxon"]].reindex(columns=RECORD_COLUMNS, fill_value="")
    downloads = images[["record_id", "sha256", "path"]].reindex(columns=DOWNLOAD_COLUMNS, fill_value="")
    write_table(records, work / "records.tsv")
    write_table(downloads, work / "downloads.tsv")
    (work / "exclusions.tsv").write_text("id\treason\n")
    start = time.perf_counter()
    table = clean.run(
        [work / "records.tsv"],
        [work / "downloads.tsv"],
        work / "exclusions.tsv",
        work / "store",
        work / "derived",
        work / "clean.tsv",
        settings,
        threads=threads,
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "images_per_s": round(len(table) / seconds, 1),
        "kept": int(table["kept"].sum()),
    }


def step_times(path: Path, max_side: int) -> dict:
    """Seconds per step for one image, on one core."""
    data = path.read_bytes()
    times = {}
    start = time.perf_counter()
    decode(data, 10**9)
    times["full_decode"] = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode(data, 10**9, at_least=max_side)
    times["draft_decode"] = time.perf_counter() - start
    start = time.perf_counter()
    near_duplicates.perceptual_hash(decoded.image)
    times["hash"] = time.perf_counter() - start
    start = time.perf_counter()
    photo_filters.measure(decoded.image)
    times["measure"] = time.perf_counter() - start
    start = time.perf_counter()
    image = decoded.image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    image.save(Path(tempfile.gettempdir(), "fishid-bench.jpg"), quality=95)
    times["derived_copy"] = time.perf_counter() - start
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=120, help="images per size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = {**yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["clean"], "max_side": 320}
    rng = np.random.default_rng(2018)
    report = {
        "command": f"python bench/cleaning.py --count {args.count} --threads {args.threads}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "max_side": settings["max_side"],
        "sizes": {},
    }
    for name, size in SIZES.items():
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            images = real_size_jpegs(size, args.count, work / "store", rng)
            mean_bytes = float(np.mean([Path(work / "store", p).stat().st_size for p in images["path"]]))
            row = {"width": size[0], "height": size[1], "images": len(images), "mean_kb": round(mean_bytes / 1024)}
            row.update(stage_throughput(images, work, settings, args.threads))
            steps = pd.DataFrame([step_times(work / "store" / p, settings["max_side"]) for p in images["path"][:10]])
            row["ms_per_step_one_core"] = {k: round(v * 1000, 1) for k, v in steps.median().items()}
            report["sizes"][name] = row
            print(name, row, flush=True)
    write_results("cleaning", report, markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Cleaning throughput",
        "",
        f"`{report['command']}` on {report['machine']} (shared, so timings are noisy); derived copies "
        f"at max_side {report['max_side']}.",
        "",
        "| size | images | mean file | images/s (clean stage) | kept | full decode | draft decode | hash | measures "
        "| derived copy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["sizes"].items():
        ms = row["ms_per_step_one_core"]
        lines.append(
            f"| {name} {row['width']}x{row['height']} | {row['images']} | {row['mean_kb']} kB | "
            f"{row['images_per_s']} | {row['kept']} | {ms['full_decode']} ms | {ms['draft_decode']} ms | "
            f"{ms['hash']} ms | {ms['measure']} ms | {ms['derived_copy']} ms |"
        )
    lines += [
        "",
        "Per-step times are medians over 10 images on one core; the stage runs on the given threads.",
        "Each size reuses the 51 seed-mini photos with fresh noise, so the stage rightly keeps 51 and",
        "drops the others as near duplicates of them.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
