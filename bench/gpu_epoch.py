"""One epoch of the real configuration's heavy models on the GPU against the CPU: RI2 (the
study's Net96 from random initialisation, 96 px), ResNet-18 trained whole at 224 px, and a
CLIP linear probe (ViT-B/16, BioCLIP's tower, 224 px: features once, then the head's epochs).

Each runs through the pipeline's own training code (fishid.train), with random weights
(no downloads; the arithmetic is the same as with trained ones). The loop has no DataLoader:
photos are decoded and resized once into the image cache, and each batch is cut and flipped
on the tensor. So the question "which loader settings keep the GPU busy" becomes where that
cache lives (host memory, copied batch by batch, or on the GPU) and the batch size; each is
measured, with the share of the epoch spent getting batches.

Data: synthetic photos of four species at 320 x 220 px (the study's photo size), 10 %
validation. The CPU runs a slice of the epoch on every core and the rate is scaled to the
whole epoch; the GPU runs the whole epoch twice and the second counts (the first warms up
cuDNN and the allocator).

Results go to bench/results/gpu_epoch.json and .md.

    python bench/gpu_epoch.py --photos 2000            # on a GPU machine: about 4 minutes
    python bench/gpu_epoch.py --photos 400 --no-gpu    # CPU only
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from output import write_results  # noqa: E402
from training_data import ROOT, cache, image_folder  # noqa: E402

from fishid import runtime  # noqa: E402
from fishid.config import with_training_defaults  # noqa: E402
from fishid.models import clip as clip_models  # noqa: E402
from fishid.models import registry as models  # noqa: E402
from fishid.train.data import Data, on_device, training_data  # noqa: E402
from fishid.train.recipes import fit_head, network_epochs  # noqa: E402

# The real configuration's training settings (batch 16, SGD 0.001, momentum 0.9, ...).
REAL = yaml.safe_load((ROOT / "config" / "amphiprion.yaml").read_text())["training_defaults"]
MODELS = {
    "RI2": {"arch": "ri", "image_size": 96},
    "ResNet-18": {"arch": "resnet18", "backbone": "random", "image_size": 224},
    "CLIP linear probe (ViT-B/16)": {"arch": "clip_linear", "image_size": 224, "feature_views": 1},
}
SPECIES = ("Amphiprion clarkii", "Amphiprion perideraion", "Amphiprion ocellaris", "Amphiprion frenatus")


def settings_of(name: str, batch_size: int) -> dict:
    return with_training_defaults(
        {**REAL, **MODELS[name], "dataset": "bench", "epochs": 1, "batch_size": batch_size, "seed": 2018}
    )


def subset(data: Data, n_train: int) -> Data:
    n_val = max(1, n_train // 9)
    return Data(
        data.train_x[:n_train], data.train_y[:n_train], data.val_x[:n_val], data.val_y[:n_val],
        data.classes, data.mean, data.std,
    )  # fmt: skip


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def network_epoch(name, data, settings, device) -> dict:
    """Seconds of one training epoch (with validation) and of getting its batches."""
    model = runtime.prepare(models.build(settings, len(data.classes)), device)
    synchronise(device)
    row = next(network_epochs(model, data, settings, device))
    synchronise(device)
    return {"seconds": row["seconds"], "data_seconds": row["data_seconds"], "photos": len(data.train_y)}


def clip_probe(name, data, settings, device) -> dict:
    """Seconds of the linear probe: features of every photo once, then `head_epochs` of the head."""
    config = clip_models_config()
    model = clip_models.build_classifier(config, len(data.classes), zero_shot=False).to(device)
    start = time.perf_counter()
    settings = {**settings, "epochs": REAL["epochs"]}
    history = fit_head(model.encoder, model.head, data, settings, device)
    synchronise(device)
    seconds = time.perf_counter() - start
    head = float(history["seconds"].sum())
    return {"seconds": seconds, "data_seconds": seconds - head, "head_seconds": head, "photos": len(data.train_y)}


def clip_models_config() -> dict:
    import open_clip

    return open_clip.get_model_config("ViT-B-16")


def run(name, data, device, batch_size, repeats) -> dict:
    settings = settings_of(name, batch_size)
    measure = clip_probe if settings["arch"] == "clip_linear" else network_epoch
    rows = [measure(name, data, settings, device) for _ in range(repeats)]
    row = rows[-1]
    row["photos_per_second"] = row["photos"] / row["seconds"]
    row["data_share"] = row["data_seconds"] / row["seconds"]
    print(name, device, batch_size, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000, help="photos rendered (90 %% train)")
    parser.add_argument("--cpu-photos", type=int, default=320, help="training photos the CPU runs")
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fishid-bench-gpu"))
    args = parser.parse_args()
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    folder = Path(args.workdir) / f"four_{args.photos}"
    image_folder(folder, dict.fromkeys(SPECIES, args.photos // 4), size=(320, 220))
    render_seconds = time.perf_counter() - start
    caches = {size: training_data(cache(folder, size)[0]) for size in (96, 224)}
    gpu = torch.device("cuda") if torch.cuda.is_available() and not args.no_gpu else None
    rows = []
    for name, spec in MODELS.items():
        data = caches[spec["image_size"]]
        n_epoch = len(data.train_y)
        cpu = run(name, subset(data, args.cpu_photos), torch.device("cpu"), REAL["batch_size"], 2)
        rows.append({"model": name, "device": f"CPU ({threads} threads)", "cache": "host", "batch": REAL["batch_size"],
                     **cpu, "epoch_seconds": n_epoch / cpu["photos_per_second"]})  # fmt: skip
        if gpu is None:
            continue
        batches = (REAL["batch_size"],) if spec["arch"] == "clip_linear" else (REAL["batch_size"], 128)
        for place, placed in (("host", data), ("GPU", on_device(data, gpu))):
            for batch in batches:
                row = run(name, placed, gpu, batch, 2)
                rows.append({"model": name, "device": torch.cuda.get_device_name(0), "cache": place, "batch": batch,
                             **row, "epoch_seconds": row["seconds"]})  # fmt: skip
    n_train = len(caches[96].train_y)
    setup = {
        "n_train": n_train,
        "n_val": len(caches[96].val_y),
        "render_seconds": render_seconds,
        "threads": threads,
        "cpu_photos": args.cpu_photos,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "settings": REAL,
    }
    lines = [
        f"# One epoch on the GPU against the CPU ({n_train} training photos, 320 x 220 px; torch {torch.__version__})",
        "",
        f"The CPU ran the first {args.cpu_photos} training photos on {threads} threads, scaled to the epoch. "
        "`cache`: where the image cache lives while batches are cut (fishid.train.data.on_device puts it on "
        "the GPU where it fits). CLIP: features of every photo once plus the head's "
        f"{REAL['epochs']} epochs; its share is the features'.",
        "",
        "| model | device | cache | batch | epoch s | photos/s | share getting batches |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['cache']} | {r['batch']} | {r['epoch_seconds']:.2f} | "
            f"{r['photos_per_second']:.0f} | {r['data_share']:.0%} |"
        )
    write_results("gpu_epoch", {"rows": rows, "setup": setup}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
