"""Sharded cleaning on 2 cores: wall time and throughput for 1, 2 and 4 clean shards, the
per-image cache on a rerun, and the steps that are not sharded at large sizes.

1. Shards. 2,000 real-size photos (1600 x 1200 JPEGs, quality 90): the classify2-dev photos
   (../shared/data/classify2-dev, 366) resized to that size, each used several times with a
   distinct JPEG comment segment (other bytes, hence another SHA-256; the same pixels, so the
   gather rightly finds the repeats near duplicates). They lie in a temporary store, never in
   the repository. For each shard count N the `fishid clean-shard` jobs run side by side (as
   Snakemake's jobs would on the machine's 2 cores: one worker each for N >= 2, two for N = 1),
   from an empty per-image cache, then `fishid clean` gathers their tables and decides.
   The one-job stage is then run again on a warm cache (what a rerun after a change of
   exclusions or near-duplicate distance costs).
2. Decisions across images (exclusions, filters, near-duplicate indexed search, groups,
   conflicts) for 100,000 and 1,000,000 synthetic decoded rows (uniform hashes, 3 % planted
   near copies), each in its own process: seconds and peak resident memory.
3. The split stage (fishid.split.stage.run) on a synthetic clean table of 100,000 and
   1,000,000 records.

Results go to bench/results/clean_shards.json and .md.

    python bench/clean_shards.py               # about 8 minutes on 2 cores
    python bench/clean_shards.py --only-split  # part 3 again, the rest of the results kept
"""

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "bench"))

from near_duplicates import decision_inputs  # noqa: E402
from output import RESULTS, write_results  # noqa: E402

from fishid.download import store  # noqa: E402
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, write_table  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "classify2-dev"
CLI = ROOT / "workflow" / "fishid_cli.py"
SIZE = (1600, 1200)
CORES = 2
SETTINGS = {"min_side": 64, "max_side": 320, "exclusions": "unused", "conflicts": "drop_all"}
SPLIT_SPEC = {
    "species": ["Amphiprion clarkii", "Amphiprion ocellaris", "Amphiprion perideraion", "Amphiprion polymnus"],
    "val_fraction": 0.2,
    "test_fraction": 0.1,
    "cap_ratio": 3,
    "seed": 3,
}


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment (COM) after its start marker: other bytes, same pixels."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def real_size_store(count: int, work: Path) -> int:
    sources = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not sources:
        raise SystemExit(f"no photos at {PHOTOS}: the benchmark needs the classify2-dev photos")
    bases = []
    for path in sources:
        with Image.open(path) as photo:
            buffer = io.BytesIO()
            photo.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
            bases.append((path, buffer.getvalue()))
    rows = []
    for index in range(count):
        path, jpeg = bases[index % len(bases)]
        sha256, relative = store.put(work / "store", with_comment(jpeg, f"bench copy {index}"), "jpg")
        rows.append({"record_id": f"bench:{index}", "taxon": path.parent.name, "sha256": sha256, "path": relative})
    images = pd.DataFrame(rows)
    write_table(images.reindex(columns=RECORD_COLUMNS, fill_value=""), work / "records.tsv")
    write_table(images.reindex(columns=DOWNLOAD_COLUMNS, fill_value=""), work / "downloads.tsv")
    (work / "exclusions.tsv").write_text("id\treason\n")
    return int(np.mean([len(jpeg) for _, jpeg in bases]))


def cli(*args) -> list[str]:
    return [sys.executable, str(CLI), *map(str, args)]


def common(work: Path) -> list:
    return ["--records", work / "records.tsv", "--downloads", work / "downloads.tsv", "--store", work / "store"]


def shard_run(work: Path, shards: int, count: int) -> dict:
    """N clean-shard jobs side by side from an empty cache, then the gather."""
    run = work / f"shards{shards}"
    cache, spec = run / "measures", json.dumps(SETTINGS)
    threads = CORES if shards == 1 else max(1, CORES // shards)
    start = time.perf_counter()
    if shards == 1:
        # One job: `fishid clean` does the per-image work itself.
        tables = []
    else:
        tables = [run / f"shard{i}.tsv" for i in range(shards)]
        jobs = [
            cli("clean-shard", *common(work), "--cache", cache, "--shard", index, shards, "--spec", spec)
            + ["--threads", str(threads), "--out", str(table)]
            for index, table in enumerate(tables)
        ]
        # At most CORES // threads jobs at once, as Snakemake with --cores 2 would run them.
        with ThreadPoolExecutor(max_workers=CORES // threads) as pool:
            list(pool.map(lambda job: subprocess.run(job, check=True, stderr=subprocess.DEVNULL), jobs))
    shard_seconds = time.perf_counter() - start
    gather = cli(
        "clean",
        *common(work),
        "--exclusions",
        work / "exclusions.tsv",
        "--derived",
        run / "derived",
        *(["--shard-tables", *tables] if tables else []),
        "--spec",
        spec,
        "--threads",
        CORES,
        "--out",
        run / "images.tsv",
    )
    subprocess.run(gather, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    result = {
        "shards": shards,
        "threads_per_shard": threads,
        "shard_seconds": round(shard_seconds, 1),
        "gather_seconds": round(wall - shard_seconds, 1),
        "wall_seconds": round(wall, 1),
        "images_per_s": round(count / wall, 1),
    }
    if shards == 1:
        start = time.perf_counter()
        subprocess.run(gather, check=True, stderr=subprocess.DEVNULL)
        result["warm_rerun_seconds"] = round(time.perf_counter() - start, 1)
    print(result, flush=True)
    return result


def decide_child(n: int) -> dict:
    """In a child process: the decisions across n synthetic decoded images."""
    from fishid.clean import stage as clean

    rng = np.random.default_rng(n)
    decoded, links = decision_inputs(n, rng, SPLIT_SPEC["species"], size=(1600, 1200))
    decoded = clean.typed(decoded)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    table = clean.decide(links, decoded, {}, SETTINGS)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": n,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak / 1024),
        "rss_before_mb": round(before / 1024),
        "kept": int(table["kept"].sum()),
    }


def split_child(n: int) -> dict:
    """In a child process: the split stage on a synthetic clean table of n kept images."""
    from fishid.clean.stage import CLEAN_COLUMNS
    from fishid.split import stage as split

    rng = np.random.default_rng(n)
    shas = np.array([f"{i:064x}" for i in rng.permutation(n)])
    # Groups of one to three images (same occurrence or near copies), named after a member, one species each.
    member = np.maximum(0, np.arange(n) - rng.integers(0, 3, n))
    group = shas[member]
    taxa = np.array(SPLIT_SPEC["species"])[(member * 2654435761 >> 7) % 4]
    clean = pd.DataFrame({"sha256": shas, "kept": "True", "taxon": taxa, "listed_as": taxa, "group": group})
    clean = clean.reindex(columns=CLEAN_COLUMNS, fill_value="")
    clean["derived_path"] = [f"{s[:2]}/{s}.jpg" for s in shas]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_table(clean, folder / "clean.tsv", CLEAN_COLUMNS)
        start = time.perf_counter()
        table = split.run(
            folder / "clean.tsv",
            "bench",
            SPLIT_SPEC,
            folder / "s.tsv",
            folder / "d.tsv",
            folder / "c.tsv",
            folder / "leaks.tsv",
            max_distance=12,
        )
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"records": n, "seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024), "in_split": len(table)}


def in_child(kind: str, n: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, f"--{kind}", str(n)], check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(done.strip().splitlines()[-1])
    print(kind, result, flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="real-size photos")
    parser.add_argument("--decide", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--split", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, nargs=2, default=[100_000, 1_000_000], help="decision and split rows")
    parser.add_argument("--only-split", action="store_true", help="rerun the split stage's part only")
    args = parser.parse_args()
    if args.decide:
        print(json.dumps(decide_child(args.decide)))
        return
    if args.split:
        print(json.dumps(split_child(args.split)))
        return
    if args.only_split:
        report = json.loads((RESULTS / "clean_shards.json").read_text())
        report.pop("split_1m_extrapolated_seconds", None)
        report["split"] = [in_child("split", n) for n in args.rows]
        report["split_command"] = "python bench/clean_shards.py --only-split"
        write_results("clean_shards", report, markdown(report))
        return
    report = {
        "command": f"python bench/clean_shards.py --count {args.count} --rows {args.rows[0]} {args.rows[1]}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "photos": {"count": args.count, "width": SIZE[0], "height": SIZE[1], "max_side": SETTINGS["max_side"]},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        report["photos"]["mean_kb"] = round(real_size_store(args.count, work) / 1024)
        report["shards"] = [shard_run(work, shards, args.count) for shards in (1, 2, 4)]
        tables = {(work / f"shards{n}" / "images.tsv").read_bytes() for n in (1, 2, 4)}
        report["shard_tables_identical"] = len(tables) == 1
    report["decisions"] = [in_child("decide", n) for n in args.rows]
    report["split"] = [in_child("split", n) for n in args.rows]
    report["sizing"] = sizing(report)
    report["total_seconds"] = round(time.perf_counter() - started)
    write_results("clean_shards", report, markdown(report))


def sizing(report: dict) -> list[dict]:
    """Hours for the per-image work on N cores, from the measured per-image CPU cost (the
    1-shard run's wall time on 2 cores, times 2 cores, per photo), plus the decisions."""
    one = report["shards"][0]
    cpu_seconds_per_photo = one["wall_seconds"] * CORES / report["photos"]["count"]
    per_row = report["decisions"][-1]["seconds"] / report["decisions"][-1]["rows"]
    rows = []
    for photos in (10_000, 100_000, 1_000_000):
        row = {"photos": photos, "decisions_hours": round(photos * per_row / 3600, 2)}
        for cores in (2, 16, 64, 256):
            row[f"hours_on_{cores}_cores"] = round(photos * cpu_seconds_per_photo / cores / 3600, 2)
        rows.append(row)
    return rows


def markdown(report: dict) -> str:
    photos = report["photos"]
    lines = [
        "# Sharded cleaning",
        "",
        f"`{report['command']}` on {report['machine']} (shared, so timings are noisy): {photos['count']} photos "
        f"of {photos['width']}x{photos['height']} ({photos['mean_kb']} kB), derived at max_side {photos['max_side']}.",
        "",
        "| shards | threads each | shard jobs (s) | gather + decide (s) | wall (s) | photos/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["shards"]:
        lines.append(
            f"| {row['shards']} | {row['threads_per_shard']} | {row['shard_seconds']} | {row['gather_seconds']} | "
            f"{row['wall_seconds']} | {row['images_per_s']} |"
        )
    lines += [
        "",
        f"Same images.tsv bytes for 1, 2 and 4 shards: {report['shard_tables_identical']}. A rerun on a warm "
        f"cache (nothing new to decode): {report['shards'][0]['warm_rerun_seconds']} s.",
        "",
        "| decisions across images | seconds | peak RSS (MB) |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {r['rows']:,} rows | {r['seconds']} | {r['peak_rss_mb']} |" for r in report["decisions"]]
    lines += ["", "| split stage | seconds | peak RSS (MB) |", "| ---: | ---: | ---: |"]
    lines += [f"| {r['records']:,} records | {r['seconds']} | {r['peak_rss_mb']} |" for r in report["split"]]
    if "split_command" in report:
        lines.append(f"\n(The split stage's rows from a later `{report['split_command']}`.)")
    lines += ["", "| photos | decisions (h) | 2 cores (h) | 16 cores (h) | 64 cores (h) | 256 cores (h) |"]
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in report["sizing"]:
        lines.append(
            f"| {r['photos']:,} | {r['decisions_hours']} | {r['hours_on_2_cores']} | {r['hours_on_16_cores']} | "
            f"{r['hours_on_64_cores']} | {r['hours_on_256_cores']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
