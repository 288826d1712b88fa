"""Whole photos against crops on real photos: classify2-dev through a trained detector.

classify2-dev (../shared/data beside the checkout: 366 real photos of Amphiprion clarkii and
A. perideraion, in train/ and val/ folders) is derived as the real study's cleaning derives
photos (config/amphiprion.yaml's max_side), each photo is cut to its fish by a detector the
pipeline trained (`--detector`, a run's results/detect/<name> folder: the demo's learnt from
synthetic photos only; no detector for real photos can be had offline), exactly as rule
detect_fish cuts (the largest box over the threshold, padded), and the study's small CNN (the
demo's RI2 settings) is trained on the train folder and scored on the val folder, once on whole
photos and once on crops, for several seeds.

    python bench/crops_real.py --detector PROJECT/results/detect/synthetic [--sheet sheet.png]

Results: bench/results/crops_real.json and .md. The sheet of crops (real photos: not committed)
goes where --sheet says.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from output import write_results  # noqa: E402

from fishid.clean import stage as clean  # noqa: E402
from fishid.detect import crops, detectors, infer, sheet  # noqa: E402
from fishid.train import imagecache  # noqa: E402
from fishid.train import stage as train  # noqa: E402

PHOTOS = REPO.parent / "shared" / "data" / "classify2-dev"
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
STUDY = yaml.safe_load((REPO / "config" / "amphiprion.yaml").read_text())
MODEL = {**DEMO["training_defaults"], **DEMO["models"]["RI2"], "dataset": "classify2-dev"}


def photos(root: Path) -> pd.DataFrame:
    rows = [
        {"path": p, "label": p.parent.name.replace("_", " "), "split": "train" if p.parts[-3] == "train" else "val"}
        for p in sorted(root.glob("*/*/*"))
        if p.is_file()
    ]
    return pd.DataFrame(rows)


def cut_all(table: pd.DataFrame, model, name: str, threshold: float, padding: float, preprocess: dict):
    """(whole images, cut images, the boxes chosen (None where no fish was found))."""
    whole, cut, chosen = [], [], []
    for path in table["path"]:
        image = clean.derive_photo(path, preprocess)
        found = crops.cut_to_fish(image, infer.detect_image(model, image, path.name, name), threshold, padding)
        whole.append(image)
        chosen.append(None if found is None else found[1])
        cut.append(image if found is None else found[0])
    return whole, cut, chosen


def cache_of(images, table: pd.DataFrame, size: int) -> dict:
    pixels = torch.from_numpy(np.stack([imagecache.square(i, size) for i in images])).permute(0, 3, 1, 2).contiguous()
    classes = sorted(table["label"].unique())
    train_rows = torch.tensor((table["split"] == "train").to_numpy())
    mean, std = imagecache.channel_stats(pixels[train_rows])
    return {
        "images": pixels,
        "labels": torch.tensor([classes.index(label) for label in table["label"]]),
        "classes": classes,
        "sha256": [p.name for p in table["path"]],
        "split": list(table["split"]),
        "mean": mean,
        "std": std,
        "split_crc32": 0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detector", type=Path, required=True, help="a run's results/detect/<detector> folder")
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--padding", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2018, 1, 2])
    parser.add_argument("--sheet", type=Path, help="write a sheet of crops beside their photos here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    name = detectors.read_meta(args.detector, "synthetic")["detector"]
    model = detectors.load_detector(name, args.detector)
    table = photos(args.photos)
    preprocess = {"max_side": STUDY["clean"]["max_side"], "max_pixels": clean.settings_with_defaults({})["max_pixels"]}
    started = time.process_time()
    whole, cut, chosen = cut_all(table, model, name, args.threshold, args.padding, preprocess)
    detect_seconds = time.process_time() - started
    found = [box is not None for box in chosen]
    areas = [
        (b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) / (im.width * im.height)
        for b, im in zip(chosen, whole)
        if b is not None
    ]
    results = {
        "photos": len(table),
        "detector": str(args.detector),
        "threshold": args.threshold,
        "padding": args.padding,
        "cropped": int(sum(found)),
        "no_fish_found": int(len(found) - sum(found)),
        "no_fish_by_source": table.assign(found=found)
        .assign(source=lambda t: [_source(p.name) for p in t["path"]])
        .query("not found")
        .groupby("source")
        .size()
        .to_dict(),
        "median_box_share_of_photo": round(float(np.median(areas)), 3) if areas else None,
        "detect_cpu_seconds": round(detect_seconds, 1),
        "runs": [],
    }
    for seed in args.seeds:
        for kind, images in (("whole", whole), ("crops", cut)):
            settings = {**MODEL, "seed": seed}
            _, history, _ = train.train_model(settings, cache_of(images, table, settings["image_size"]))
            last = history.iloc[-1]
            results["runs"].append({"seed": seed, "input": kind, "val_accuracy": round(float(last["val_acc"]), 4)})
            print(results["runs"][-1], flush=True)
    for kind in ("whole", "crops"):
        accuracies = [r["val_accuracy"] for r in results["runs"] if r["input"] == kind]
        results[f"{kind}_mean_val_accuracy"] = round(float(np.mean(accuracies)), 4)
    if args.sheet:
        shown = table.assign(image=[p.name for p in table["path"]], found=found)
        shown = pd.concat([shown[shown["found"]].head(9), shown[~shown["found"]].head(6)])
        crop_root = args.sheet.parent / (args.sheet.stem + "-crops")
        cut_table = crops.crop_photos(
            pd.concat([infer.detect_image(model, whole[i], table["path"][i].name, name) for i in shown.index]),
            {table["path"][i].name: str(table["path"][i]) for i in shown.index},
            crop_root,
            name,
            args.threshold,
            args.padding,
            # The boxes are in the derived copy's pixels; the files are the originals.
            {table["path"][i].name: whole[i].size for i in shown.index},
        )[0]
        frame = pd.DataFrame(
            {
                "image": shown["image"],
                "path": [str(p) for p in shown["path"]],
                "width": [whole[i].width for i in shown.index],
                "height": [whole[i].height for i in shown.index],
            }
        )
        sheet.sheet(frame, cut_table, crop_root).save(args.sheet)
    lines = [
        "# Whole photos against crops on real photos (classify2-dev)",
        "",
        f"`python bench/crops_real.py --detector {args.detector}`: {results['photos']} photos, the detector "
        f"found a fish (score >= {args.threshold}) in {results['cropped']}, none in {results['no_fish_found']} "
        f"(by source: {results['no_fish_by_source']}); median box {results['median_box_share_of_photo']} of the "
        f"photo; detection {results['detect_cpu_seconds']} CPU-s. The demo's RI2 settings, trained on train/, "
        "scored on val/ (last epoch):",
        "",
        "| seed | whole photos | crops |",
        "| --- | --- | --- |",
    ]
    for seed in args.seeds:
        row = {r["input"]: r["val_accuracy"] for r in results["runs"] if r["seed"] == seed}
        lines.append(f"| {seed} | {row['whole']} | {row['crops']} |")
    lines.append(f"| mean | {results['whole_mean_val_accuracy']} | {results['crops_mean_val_accuracy']} |")
    write_results("crops_real", results, "\n".join(lines) + "\n")


def _source(name: str) -> str:
    return "gbif" if name.startswith("gbif_") else "fishpix" if name.startswith("pix") else "fishbase"


if __name__ == "__main__":
    main()
