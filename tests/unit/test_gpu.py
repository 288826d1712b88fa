"""Training on CUDA: the mixed-precision path (float16 autocast and a gradient scaler, see
fishid.runtime) runs, and the saved meta.json says so. Skipped where CUDA is not usable; CI
has no GPU, so there too it is a skip, saying why, not a failure."""

import json

import pytest
import torch
from toydata import SETTINGS, toy_cache

from fishid import runtime
from fishid.train import record, stage
from fishid.train.data import on_device, training_data

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False on this machine"
    ),
]


def test_training_on_cuda_runs_float16_autocast_with_a_gradient_scaler_and_meta_says_so(tmp_path, monkeypatch):
    contexts, scalers = [], []
    autocast, grad_scaler = runtime.autocast, runtime.grad_scaler

    def noted_autocast(device, *args, **kwargs):
        contexts.append(autocast(device, *args, **kwargs))
        return contexts[-1]

    def noted_scaler(device):
        scalers.append(grad_scaler(device))
        return scalers[-1]

    monkeypatch.setattr(runtime, "autocast", noted_autocast)
    monkeypatch.setattr(runtime, "grad_scaler", noted_scaler)
    result = stage.train_model(SETTINGS, toy_cache(tmp_path))
    record.save(*result, tmp_path / "weights.pt", tmp_path / "history.csv", tmp_path / "meta.json")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["device"] == "cuda" and meta["mixed_precision"] == "float16"
    # Every training step (and validation) ran under float16 autocast on CUDA, scaled.
    assert contexts and all(isinstance(c, torch.autocast) for c in contexts)
    assert {(c.device, c.fast_dtype) for c in contexts} == {("cuda", torch.float16)}
    assert len(scalers) == 1 and scalers[0].is_enabled()
    history = result[1]
    assert history["train_loss"].notna().all() and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    # The weights come back as float32 on the CPU, as CPU runs save them.
    assert all(v.device.type == "cpu" for v in result[0]["model"].values())
    assert {v.dtype for v in result[0]["model"].values() if v.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize(
    "arch, more",
    [
        ("ri", {}),
        ("resnet18", {"backbone": "random"}),
        ("tl", {"backbone": "random"}),
        ("siamese", {"backbone": "random", "freeze_backbone": False}),
    ],
)
def test_each_recipe_trains_on_cuda_from_images_placed_on_the_gpu(tmp_path, monkeypatch, arch, more):
    placed = []

    def noted_on_device(data, device, *args, **kwargs):
        placed.append(on_device(data, device, *args, **kwargs))
        return placed[-1]

    monkeypatch.setattr(stage, "on_device", noted_on_device)
    settings = {**SETTINGS, "arch": arch, "epochs": 2, **more}
    weights, history, meta = stage.train_model(settings, toy_cache(tmp_path))
    assert meta["device"] == "cuda"
    assert len(placed) == 1 and placed[0].train_x.is_cuda and placed[0].val_x.is_cuda
    assert history["train_loss"].notna().all() and history["val_acc"].between(0, 1).all()
    assert all(v.device.type == "cpu" for v in weights["model"].values())


def test_images_over_their_share_of_gpu_memory_stay_in_host_memory(tmp_path):
    data = training_data(toy_cache(tmp_path))
    kept = on_device(data, torch.device("cuda"), share=0.0)
    assert kept is data and not kept.train_x.is_cuda
