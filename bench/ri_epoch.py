"""RI (the study's CNN from random initialisation): one epoch of the study's loop against
ours at the same settings, each epoch split into data loading and compute.

The study's loop: torchvision's ImageFolder whose transforms decode, random-resized-crop
(96 px, scale 0.5-1), flip, convert and normalise each photo in turn (a PIL pipeline per
image), batches of 16, then validation through a DataLoader of batches of 16.
Ours (fishid.train, arch ri): photos decoded and resized once into the image cache; each
batch cropped and flipped on the tensor (one affine grid per batch); channels-last network
and inputs; validation in batches of 256; threads set as the rule sets them. Ours also runs
with `cpu_bfloat16: true` (bfloat16 autocast, a model setting; float32 is the default).

Data: two synthetic species rendered at 320 x 220 px (0.07 megapixels, like the study's
photos), 10 % validation. Same network, initialisation seed and settings (SGD 0.001,
momentum 0.9, StepLR 7/0.1, batch 16). The two loops run in one process, their epochs in
turn, so that both see the same load on a shared machine.

Results go to bench/results/ri_epoch.json and .md.

    python bench/ri_epoch.py                 # about 6 minutes on 2 quiet cores
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_data import cache, image_folder  # noqa: E402

from fishid import models, runtime, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPECIES = {"Amphiprion clarkii": 400, "Amphiprion perideraion": 400}
SIZE = 96
STUDY = {
    "arch": "ri",
    "dataset": "bench",
    "image_size": SIZE,
    "batch_size": 16,
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "step_size": 7,
    "gamma": 0.1,
    "crop_scale": [0.5, 1.0],
    "flip": True,
    "seed": 2018,
    "feature_views": 1,
    "channels": [32, 64, 128],
    "hidden": [512, 128],
}


def study_epochs(folder: Path, epochs: int, mean, std):
    """The study's loop, one epoch at a time (a generator of history rows)."""
    torch.manual_seed(STUDY["seed"])
    normalize = transforms.Normalize(mean.tolist(), std.tolist())
    train_set = datasets.ImageFolder(
        folder / "train",
        transforms.Compose(
            [
                transforms.RandomResizedCrop(SIZE, scale=tuple(STUDY["crop_scale"])),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        ),
    )
    val_set = datasets.ImageFolder(
        folder / "val", transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.ToTensor(), normalize])
    )
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=STUDY["batch_size"], shuffle=True)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=STUDY["batch_size"])
    model = models.StudyCNN(len(train_set.classes), SIZE, STUDY["channels"], STUDY["hidden"])
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=STUDY["lr"], momentum=STUDY["momentum"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, STUDY["step_size"], STUDY["gamma"])
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        data_seconds = 0.0
        model.train()
        batches = iter(train_loader)
        while True:
            loaded = time.perf_counter()
            batch = next(batches, None)
            data_seconds += time.perf_counter() - loaded
            if batch is None:
                break
            inputs, labels = batch
            loss = criterion(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            batches = iter(val_loader)
            while True:
                loaded = time.perf_counter()
                batch = next(batches, None)
                data_seconds += time.perf_counter() - loaded
                if batch is None:
                    break
                correct += (model(batch[0]).argmax(1) == batch[1]).sum().item()
        seconds = time.perf_counter() - start
        yield {"epoch": epoch, "seconds": seconds, "data_seconds": data_seconds, "val_acc": correct / len(val_set)}


def our_epochs(images: dict, epochs: int, cpu_bfloat16=False):
    """The pipeline's RI training (fishid.train, as train_model runs it), one epoch at a time."""
    settings = train.with_defaults({**STUDY, "epochs": epochs, "cpu_bfloat16": cpu_bfloat16})
    torch.manual_seed(settings["seed"])
    device = torch.device("cpu")
    data = train.training_data(images)
    model = runtime.prepare(models.build(settings, len(data.classes)), device)
    return train.network_epochs(model, data, settings, device)


def interleaved(loops: dict, epochs: int) -> dict:
    """Epochs of the loops in turn, a different one going first each epoch, so that all see
    the same load on a shared machine."""
    histories = {name: [] for name in loops}
    names = list(loops)
    for epoch in range(epochs):
        for name in names[epoch % len(names) :] + names[: epoch % len(names)]:
            histories[name].append(next(loops[name]))
            print(name, {k: round(v, 3) for k, v in histories[name][-1].items()}, flush=True)
    return histories


def summary(history: list[dict]) -> dict:
    # The first epoch warms up allocators and oneDNN kernels: leave it out of the mean.
    steady = history[1:] if len(history) > 1 else history
    seconds = float(np.mean([h["seconds"] for h in steady]))
    data = float(np.mean([h["data_seconds"] for h in steady]))
    return {
        "epoch_seconds": seconds,
        "data_seconds": data,
        "compute_seconds": seconds - data,
        "data_share": data / seconds,
        "val_acc_last": history[-1]["val_acc"],
        "val_acc_best": max(h["val_acc"] for h in history),
        "epochs": history,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fishid-bench-training"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.workdir) / "two_species_320px"
    image_folder(folder, SPECIES, size=(320, 220))
    load_before = os.getloadavg()[0]
    images, cache_seconds = cache(folder, SIZE)
    histories = interleaved(
        {
            "study": study_epochs(folder, args.epochs, images["mean"], images["std"]),
            "ours": our_epochs(images, args.epochs),
            "ours_bfloat16": our_epochs(images, args.epochs, cpu_bfloat16=True),
        },
        args.epochs,
    )
    study, ours, ours_bf16 = (summary(histories[n]) for n in ("study", "ours", "ours_bfloat16"))
    ours["cache_seconds_once"] = cache_seconds
    results = {
        "study": study,
        "ours": ours,
        "ours_cpu_bfloat16": ours_bf16,
        "speedup": study["epoch_seconds"] / ours["epoch_seconds"],
        "speedup_cpu_bfloat16": study["epoch_seconds"] / ours_bf16["epoch_seconds"],
        "setup": {
            "epochs": args.epochs,
            "n_train": images["split"].count("train"),
            "n_val": images["split"].count("val"),
            "photo_pixels": 320 * 220,
            "threads": args.threads,
            "load_average_before_after": [load_before, os.getloadavg()[0]],
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ri_epoch.json").write_text(json.dumps(results, indent=2))
    setup = results["setup"]
    lines = [
        f"# RI: one epoch, the study's loop vs ours ({setup['n_train']} training / {setup['n_val']} validation "
        f"photos of 320 x 220 px, {SIZE} px input, batch 16, {args.epochs} epochs, {args.threads} threads, "
        f"load average {load_before:.1f} before)",
        "",
        "| loop | epoch s (mean of epochs 2+) | data loading s | compute s | data share | val acc (last) | "
        "val acc (best) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in (
        ("study (PIL per image)", study),
        ("ours (cache, channels-last, float32: the default)", ours),
        ("ours with `cpu_bfloat16: true`", ours_bf16),
    ):
        lines.append(
            f"| {name} | {row['epoch_seconds']:.2f} | {row['data_seconds']:.2f} | {row['compute_seconds']:.2f} | "
            f"{row['data_share']:.1%} | {row['val_acc_last']:.3f} | {row['val_acc_best']:.3f} |"
        )
    lines += [
        "",
        f"Speed-up per epoch: {results['speedup']:.2f}x in float32, {results['speedup_cpu_bfloat16']:.2f}x with "
        f"bfloat16 autocast; our cache took {cache_seconds:.1f} s once (decoding and resizing every photo).",
    ]
    (RESULTS / "ri_epoch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
