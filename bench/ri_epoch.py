"""RI (the study's CNN from random initialisation): one epoch of the study's loop against
ours at the same settings, each epoch split into data loading and compute.

The study's loop: torchvision's ImageFolder whose transforms decode, random-resized-crop
(96 px, scale 0.5-1), flip, convert and normalise each photo in turn (a PIL pipeline per
image), batches of 16, then validation through a DataLoader of batches of 16.
Ours (fishid.train's loop, arch ri): photos decoded and resized once into the image cache; each
batch cropped and flipped on the tensor (one affine grid per batch); channels-last network
and inputs; validation in batches of 256; threads set as the rule sets them. Ours also runs
with `cpu_bfloat16: true` (bfloat16 autocast, a model setting; float32 is the default).

Data: two synthetic species rendered at 320 x 220 px (0.07 megapixels, like the study's
photos), 10 % validation. Same network, initialisation seed and settings (SGD 0.001,
momentum 0.9, StepLR 7/0.1, batch 16). The two loops run in one process, their epochs in
turn, so that both see the same load on a shared machine.

Results go to bench/results/ri_epoch.json and .md.

    python bench/ri_epoch.py                 # about 5 minutes per seed (3) on 2 quiet cores
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from output import write_results  # noqa: E402
from training_data import STUDY, cache, image_folder, setup_record, study_loaders  # noqa: E402

from fishid import runtime  # noqa: E402
from fishid.config import with_training_defaults  # noqa: E402
from fishid.models import registry as models
from fishid.train.data import training_data
from fishid.train.recipes import network_epochs

SPECIES = {"Amphiprion clarkii": 400, "Amphiprion perideraion": 400}
SIZE = 96
SETTINGS = {**STUDY, "arch": "ri", "dataset": "bench", "image_size": SIZE, "feature_views": 1}


def timed_batches(loader, waited: list):
    """The loader's batches; the seconds spent waiting for each are added to waited[0]."""
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        waited[0] += time.perf_counter() - start
        if batch is None:
            return
        yield batch


def study_epochs(folder: Path, epochs: int, mean, std, seed: int):
    """The study's loop, one epoch at a time (a generator of history rows)."""
    torch.manual_seed(seed)
    loaders = study_loaders(folder, SIZE, mean, std)
    train_loader, val_loader = loaders["train"], loaders["val"]
    train_set, val_set = train_loader.dataset, val_loader.dataset
    model = models.StudyCNN(len(train_set.classes), SIZE, SETTINGS["channels"], SETTINGS["hidden"])
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=STUDY["lr"], momentum=STUDY["momentum"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, STUDY["step_size"], STUDY["gamma"])
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        waited = [0.0]
        model.train()
        for inputs, labels in timed_batches(train_loader, waited):
            loss = criterion(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for inputs, labels in timed_batches(val_loader, waited):
                correct += (model(inputs).argmax(1) == labels).sum().item()
        seconds = time.perf_counter() - start
        yield {"epoch": epoch, "seconds": seconds, "data_seconds": waited[0], "val_acc": correct / len(val_set)}


def our_epochs(images: dict, epochs: int, seed: int, cpu_bfloat16=False):
    """The pipeline's RI training (fishid.train's loop, as train_model runs it), one epoch at a time."""
    settings = with_training_defaults({**SETTINGS, "epochs": epochs, "seed": seed, "cpu_bfloat16": cpu_bfloat16})
    torch.manual_seed(settings["seed"])
    device = torch.device("cpu")
    data = training_data(images)
    model = runtime.prepare(models.build(settings, len(data.classes)), device)
    return network_epochs(model, data, settings, device)


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


def summary(runs: list[list[dict]]) -> dict:
    """Epoch times over every run (one per seed), accuracy per run and on average."""
    # The first epoch warms up allocators and oneDNN kernels: leave it out of the mean.
    steady = [h for history in runs for h in (history[1:] if len(history) > 1 else history)]
    seconds = float(np.mean([h["seconds"] for h in steady]))
    data = float(np.mean([h["data_seconds"] for h in steady]))
    last = [history[-1]["val_acc"] for history in runs]
    return {
        "epoch_seconds": seconds,
        "data_seconds": data,
        "compute_seconds": seconds - data,
        "data_share": data / seconds,
        "val_acc_last": last,
        "val_acc_last_mean": float(np.mean(last)),
        "val_acc_best_mean": float(np.mean([max(h["val_acc"] for h in history) for history in runs])),
        "runs": runs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="the study trained 30")
    # 80 validation photos: one photo is 1.25 points, so accuracy is compared over seeds.
    parser.add_argument("--seeds", type=int, nargs="+", default=[2018, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fishid-bench-training"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.workdir) / "two_species_320px"
    image_folder(folder, SPECIES, size=(320, 220))
    load_before = os.getloadavg()[0]
    images, cache_seconds = cache(folder, SIZE)
    runs = {"study": [], "ours": [], "ours_bfloat16": []}
    for seed in args.seeds:
        histories = interleaved(
            {
                "study": study_epochs(folder, args.epochs, images["mean"], images["std"], seed),
                "ours": our_epochs(images, args.epochs, seed),
                "ours_bfloat16": our_epochs(images, args.epochs, seed, cpu_bfloat16=True),
            },
            args.epochs,
        )
        for name, history in histories.items():
            runs[name].append(history)
    study, ours, ours_bf16 = (summary(runs[n]) for n in ("study", "ours", "ours_bfloat16"))
    ours["cache_seconds_once"] = cache_seconds
    results = {
        "study": study,
        "ours": ours,
        "ours_cpu_bfloat16": ours_bf16,
        "speedup": study["epoch_seconds"] / ours["epoch_seconds"],
        "speedup_cpu_bfloat16": study["epoch_seconds"] / ours_bf16["epoch_seconds"],
        "setup": {
            "epochs": args.epochs,
            "seeds": args.seeds,
            "photo_pixels": 320 * 220,
            **setup_record(images, args.threads, load_before),
        },
    }
    setup = results["setup"]
    lines = [
        f"# RI: one epoch, the study's loop vs ours ({setup['n_train']} training / {setup['n_val']} validation "
        f"photos of 320 x 220 px, {SIZE} px input, batch 16, {args.epochs} epochs, seeds {args.seeds}, "
        f"{args.threads} threads, load average {load_before:.1f} before)",
        "",
        "| loop | epoch s (mean of epochs 2+) | data loading s | compute s | data share | val acc (last, per seed) | "
        "mean | mean of best |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in (
        ("study (PIL per image)", study),
        ("ours (cache, channels-last, float32: the default)", ours),
        ("ours with `cpu_bfloat16: true`", ours_bf16),
    ):
        lines.append(
            f"| {name} | {row['epoch_seconds']:.2f} | {row['data_seconds']:.2f} | {row['compute_seconds']:.2f} | "
            f"{row['data_share']:.1%} | {' / '.join(f'{a:.3f}' for a in row['val_acc_last'])} | "
            f"{row['val_acc_last_mean']:.3f} | {row['val_acc_best_mean']:.3f} |"
        )
    lines += [
        "",
        f"Speed-up per epoch: {results['speedup']:.2f}x in float32, {results['speedup_cpu_bfloat16']:.2f}x with "
        f"bfloat16 autocast; our cache took {cache_seconds:.1f} s once (decoding and resizing every photo).",
    ]
    write_results("ri_epoch", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
