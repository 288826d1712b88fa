"""TL (frozen ResNet-18 + new final layer): the pipeline's cached features against the
study's loop, 30 epochs on the same images.

The study's loop (PyTorch's transfer-learning tutorial, which the study followed): an
ImageFolder whose transforms decode, random-resized-crop, flip and normalise every photo
every epoch, batches of 16, the whole frozen network run forward for every batch in training
mode, then validation through the whole network. Ours (fishid.train, arch tl): decode and
resize once into the image cache, run the frozen backbone once over `feature_views`
augmented views of each training image in training mode, in shuffled batches (as the study's
loop did every epoch; its batch norms re-estimate their statistics on the way), once over
validation in evaluation mode, then train the layer on the features.

Ours runs before, halfway through and after the study's loop and the median run counts.
Both start from the same backbone, pre-trained by the pipeline's own rule on the demo's six
pool species (the demo's offline stand-in for ImageNet), and train on the demo's four
species with the study's settings (SGD 0.001, momentum 0.9, StepLR 7/0.1, batch 16).
Times include everything each needs per model: for ours the cache, the features and the
head; for the study's loop every epoch's decoding.

Results go to bench/results/tl_cached_features.json and .md.

    python bench/tl_cached_features.py              # about 5 minutes on 2 quiet cores
    python bench/tl_cached_features.py --size 224   # the study's input size, much longer
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from output import write_results  # noqa: E402
from training_data import (  # noqa: E402
    FOUR_SPECIES,
    POOL,
    ROOT,
    STUDY,
    cache,
    image_folder,
    setup_record,
    study_loaders,
)

from fishid import config as fishid_config  # noqa: E402
from fishid.models import registry as models  # noqa: E402
from fishid.train import stage as train

# The demo's backbone recipe, read where the pipeline reads it.
POOL_BACKBONE = fishid_config.backbone_settings(fishid_config.load(ROOT / "config" / "config.yaml"), "pool")


def study_loop(folder: Path, size: int, backbone_path: Path, mean, std, halfway=lambda: None) -> dict:
    """The study's loop; `halfway()` runs after half its epochs, off its clock."""
    torch.manual_seed(STUDY["seed"])
    loaders = study_loaders(folder, size, mean, std)
    train_set, val_set = loaders["train"].dataset, loaders["val"].dataset
    model = models.backbone_resnet18()
    models.load_backbone_state(model, backbone_path)
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.fc = nn.Linear(512, len(train_set.classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=STUDY["lr"], momentum=STUDY["momentum"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, STUDY["step_size"], STUDY["gamma"])
    seconds, accuracy = 0.0, []
    for epoch in range(STUDY["epochs"]):
        if epoch == STUDY["epochs"] // 2:
            halfway()
        start = time.perf_counter()
        for phase in ("train", "val"):
            model.train(phase == "train")
            correct = 0
            for inputs, labels in loaders[phase]:
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                correct += (outputs.argmax(1) == labels).sum().item()
            if phase == "train":
                scheduler.step()
            else:
                accuracy.append(correct / len(val_set))
        seconds += time.perf_counter() - start
    return {"seconds": seconds, "val_acc": accuracy[-1], "best_val_acc": max(accuracy)}


def ours(folder: Path, size: int, backbone_path: Path, views: int) -> dict:
    images, cache_seconds = cache(folder, size)
    settings = {**STUDY, "arch": "tl", "dataset": "bench", "backbone": "pool", "image_size": size}
    start = time.perf_counter()
    _, history, _ = train.train_model({**settings, "feature_views": views}, images, backbone_path)
    seconds = time.perf_counter() - start
    return {
        "feature_views": views,
        "cache_seconds": cache_seconds,
        "train_seconds": seconds,
        "seconds": cache_seconds + seconds,
        "val_acc": history["val_acc"].iloc[-1],
        "best_val_acc": history["val_acc"].max(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input side in pixels (the study: 224 crops of 256)")
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 5], help="feature_views values to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fishid-bench-training"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    image_folder(work / "four_species", FOUR_SPECIES)
    image_folder(work / "pool", POOL)
    # Named by the recipe, so that a changed recipe trains a new backbone.
    recipe = hashlib.sha256(json.dumps(POOL_BACKBONE, sort_keys=True).encode()).hexdigest()[:12]
    backbone_path = work / f"pool-backbone-{recipe}.pt"
    if not backbone_path.exists():
        pool_cache, _ = cache(work / "pool", POOL_BACKBONE["image_size"])
        weights, _, _ = train.pretrain_backbone({**POOL_BACKBONE, "dataset": "pool", "arch": "ri"}, pool_cache)
        torch.save(weights, backbone_path)
    images, _ = cache(work / "four_species", args.size)
    load_before = os.getloadavg()[0]

    # Ours runs before, halfway through and after the study's loop, and the median counts:
    # on a shared machine, the load then weighs on both alike.
    def run_ours():
        return [ours(work / "four_species", args.size, backbone_path, v) for v in args.views]

    runs = [run_ours()]
    study = study_loop(
        work / "four_species", args.size, backbone_path, images["mean"], images["std"], lambda: runs.append(run_ours())
    )
    runs.append(run_ours())
    results = {"study": study, "cached": []}
    for rows in zip(*runs):
        row = sorted(rows, key=lambda r: r["seconds"])[1]
        row["seconds_before_halfway_after"] = [r["seconds"] for r in rows]
        row["speedup"] = study["seconds"] / row["seconds"]
        results["cached"].append(row)
    results["setup"] = {
        "size": args.size,
        "epochs": STUDY["epochs"],
        **setup_record(images, args.threads, load_before),
    }
    study = results["study"]
    lines = [
        f"# TL: cached features vs the study's loop ({args.size} px, {STUDY['epochs']} epochs, "
        f"{results['setup']['n_train']} training / {results['setup']['n_val']} validation images, "
        f"{args.threads} threads, load average {load_before:.1f} before)",
        "",
        "| loop | feature views | seconds | speed-up | val acc (last) | val acc (best) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| study (full forward every epoch) | - | {study['seconds']:.1f} | 1.0x | {study['val_acc']:.3f} | "
        f"{study['best_val_acc']:.3f} |",
    ]
    for row in results["cached"]:
        lines.append(
            f"| cached features (cache {row['cache_seconds']:.1f} s + train {row['train_seconds']:.1f} s; runs "
            f"{' / '.join(f'{t:.1f}' for t in row['seconds_before_halfway_after'])} s) | "
            f"{row['feature_views']} | {row['seconds']:.1f} | {row['speedup']:.1f}x | {row['val_acc']:.3f} | "
            f"{row['best_val_acc']:.3f} |"
        )
    write_results("tl_cached_features", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
