"""Training on CUDA: the mixed-precision path (float16 autocast and a gradient scaler, see
fishid.runtime) runs, and the saved meta.json says so. Skipped where CUDA is not usable; CI
has no GPU, so there too it is a skip, saying why, not a failure."""

import json

import pytest
import torch
from toydata import SETTINGS, toy_cache

from fishid import runtime
from fishid.train import loop as train

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
    result = train.train_model(SETTINGS, toy_cache(tmp_path))
    train.save(*result, tmp_path / "weights.pt", tmp_path / "history.csv", tmp_path / "meta.json")
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
