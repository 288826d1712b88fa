"""BioCLIP (open_clip `hf-hub:imageomics/bioclip-2`) the way the pipeline reads it: from
huggingface_hub's cache layout under resources/weights, never from the network. A tiny
open_clip CLIP stands in for BioCLIP, written exactly as a download leaves it
(models--org--name/{blobs,refs,snapshots}), and is loaded by the hf-hub name, offline."""

import hashlib
import json
import logging

import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants
from projectrun import make_project, planned
from safetensors.torch import save_file
from toydata import SETTINGS, TINY_CLIP, toy_cache

from fishid import cli
from fishid.evaluate import inference
from fishid.models import clip as clip_models
from fishid.models import weights
from fishid.models.weights import WeightsUnavailable
from fishid.train import record, stage

REPO_ID = "test-org/tiny-bioclip"
MODEL = f"hf-hub:{REPO_ID}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Not open_clip's defaults (OpenAI's), so that the test sees these come from the config.
MEAN, STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """No test may reach the Hub: huggingface_hub refuses every request (HF_HUB_OFFLINE)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_cache(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return clip_models.build_clip(TINY_CLIP).eval()


def hub_config():
    return {"model_cfg": TINY_CLIP, "preprocess_cfg": {"mean": MEAN, "std": STD}}


def write_download(cache, model, weights_name="open_clip_model.safetensors"):
    """The cache as `hf_hub_download` leaves it: content-addressed blobs, the commit's
    snapshot folder of links to them, refs/main naming the commit."""
    repo = cache / "models--test-org--tiny-bioclip"
    snapshot = repo / "snapshots" / COMMIT
    for folder in (repo / "blobs", repo / "refs", snapshot):
        folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    staged = repo / "staged"
    if weights_name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, staged)
    else:
        torch.save(model.state_dict(), staged)
    files = {"open_clip_config.json": json.dumps(hub_config()).encode(), weights_name: staged.read_bytes()}
    staged.unlink()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(f"../../blobs/{blob.name}")
    return snapshot


@pytest.fixture
def cache(tmp_path, tiny):
    cache = tmp_path / "resources" / "weights" / "open_clip"
    write_download(cache, tiny)
    return cache


def spec(cache):
    return {"source": "open_clip", "model": MODEL, "cache": str(cache)}


def same_weights(loaded, model):
    state = loaded.state_dict()
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_the_layout_is_huggingface_hubs_and_open_clips_own_loader_reads_it(cache, tiny):
    scan = huggingface_hub.scan_cache_dir(cache)
    assert [r.repo_id for r in scan.repos] == [REPO_ID]
    (revision,) = next(iter(scan.repos)).revisions
    assert revision.commit_hash == COMMIT
    assert {f.file_name for f in revision.files} == {"open_clip_config.json", "open_clip_model.safetensors"}
    # open_clip's own hf-hub loader, offline, finds the same files.
    model = open_clip.create_model(MODEL, cache_dir=str(cache), require_pretrained=True)
    assert same_weights(model, tiny)


def test_hub_model_loads_offline_with_its_weights_and_preprocessing(cache, tiny):
    backbone = clip_models.load_backbone(spec(cache), None, allow_download=False)
    assert torch.equal(backbone.model.visual.conv1.weight, tiny.visual.conv1.weight)
    assert same_weights(backbone.model, tiny)
    assert backbone.mean.tolist() == pytest.approx(MEAN) and backbone.std.tolist() == pytest.approx(STD)
    assert backbone.config == TINY_CLIP
    assert backbone.tokenizer(["a photo of Amphiprion clarkii."]).shape == (1, TINY_CLIP["text_cfg"]["context_length"])


def test_files_put_by_hand_in_snapshots_main_are_found(tmp_path, tiny):
    """What the offline message asks for: the two files in models--org--name/snapshots/main/."""
    cache = tmp_path / "weights"
    folder = weights.hub_repo_folder(cache, REPO_ID) / "snapshots" / "main"
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps(hub_config()))
    torch.save(tiny.state_dict(), folder / "open_clip_pytorch_model.bin")
    backbone = clip_models.load_backbone(spec(cache), None, allow_download=False)
    assert same_weights(backbone.model, tiny)


def test_zero_shot_and_linear_probe_run_on_the_hub_model(tmp_path, toy, cache, tiny):
    labels = ["blue fish", "red fish"]
    prompt = "a photo of {species}."
    settings = {**SETTINGS, "arch": "clip_zeroshot", "backbone": "bioclip", "prompt": prompt}
    weights_out, history, meta = stage.train_model(settings, toy, None, backbone_spec=spec(cache))
    record.save(weights_out, history, meta, tmp_path / "w.pt", tmp_path / "h.csv", tmp_path / "m.json")
    assert list(history["epoch"]) == [0]
    # The hub model's own normalisation, as its config says.
    assert weights_out["mean"].tolist() == pytest.approx(MEAN) and weights_out["std"].tolist() == pytest.approx(STD)
    images = torch.stack([toy["images"][i] for i, s in enumerate(toy["split"]) if s == "val"])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    backbone = clip_models.load_backbone(spec(cache), None, allow_download=False)
    with torch.no_grad():
        image = torch.nn.functional.normalize(tiny.encode_image((images.float() / 255 - mean) / std), dim=-1)
        text = clip_models.prompt_embeddings(backbone, labels, prompt)
        expected = (tiny.logit_scale.exp() * image @ text.T).softmax(1)
    predictions = inference.predict(settings, tmp_path / "w.pt", toy, "val")
    assert np.allclose(predictions[[f"score:{c}" for c in labels]].to_numpy(), expected.numpy(), atol=1e-4)

    settings = {**SETTINGS, "arch": "clip_linear", "backbone": "bioclip", "epochs": 2}
    weights_out, history, _ = stage.train_model(settings, toy, None, backbone_spec=spec(cache))
    assert len(history) == 2 and np.isfinite(history["val_loss"]).all()
    tower = {k.removeprefix("encoder.visual."): v for k, v in weights_out["model"].items() if ".visual." in k}
    assert all(torch.equal(tower[k], v) for k, v in tiny.visual.state_dict().items())


def test_missing_model_offline_names_the_model_the_folder_and_the_files(tmp_path):
    cache = tmp_path / "resources" / "weights" / "open_clip"
    bioclip2 = {"source": "open_clip", "model": "hf-hub:imageomics/bioclip-2", "cache": str(cache)}
    for allow_download in (False, True):  # True: huggingface_hub is offline (HF_HUB_OFFLINE)
        with pytest.raises(WeightsUnavailable) as error:
            clip_models.load_backbone(bioclip2, None, allow_download=allow_download)
        message = str(error.value)
        assert "hf-hub:imageomics/bioclip-2" in message
        assert f"{cache}/models--imageomics--bioclip-2/snapshots/main/" in message
        assert "open_clip_config.json" in message and "open_clip_pytorch_model.bin" in message
        assert "https://huggingface.co/imageomics/bioclip-2" in message


def test_a_failed_download_is_a_clear_error_too(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot find it in the cache.\n..."
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsUnavailable) as error:
        weights.hub_files("hf-hub:imageomics/bioclip-2", tmp_path, allow_download=True)
    message = str(error.value)
    assert message.startswith("could not download open_clip model hf-hub:imageomics/bioclip-2")
    assert "LocalEntryNotFoundError: An error happened" in message and "\n" not in message
    assert f"{tmp_path}/models--imageomics--bioclip-2/snapshots/main/" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_download_takes_safetensors_when_there_else_the_bin(tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []

    def fake_download(repo_id, filename, cache_dir):
        asked.append(filename)
        if filename == "open_clip_model.safetensors":
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} is not in {repo_id}")
        if filename == "open_clip_pytorch_model.bin":
            write_download(tmp_path, tiny, "open_clip_pytorch_model.bin")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    files = weights.hub_files(MODEL, tmp_path, allow_download=True)
    assert asked == ["open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert files.weights.name == "open_clip_pytorch_model.bin" and files.folder.name == COMMIT


def test_weights_command_records_the_cached_files_or_fails_without_a_traceback(tmp_path, cache, caplog, capsys):
    out = tmp_path / "record.json"
    cli.main(["open-clip-weights", "--model", MODEL, "--cache-dir", str(cache), "--offline", "--out", str(out)])
    record = json.loads(out.read_text())
    blob = (cache / "models--test-org--tiny-bioclip" / "snapshots" / COMMIT / "open_clip_model.safetensors").resolve()
    assert record["model"] == MODEL and record["revision"] == COMMIT
    assert record["files"]["open_clip_model.safetensors"]["sha256"] == blob.name

    caplog.set_level(logging.ERROR)
    missing = ["open-clip-weights", "--model", "hf-hub:imageomics/bioclip-2", "--cache-dir", str(tmp_path / "none")]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*missing, "--offline", "--out", str(tmp_path / "none.json")])
    assert exit_.value.code == 1
    assert "hf-hub:imageomics/bioclip-2" in caplog.text
    assert "models--imageomics--bioclip-2/snapshots/main" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


BIOCLIP_MODELS = {f"BioCLIP2-{kind}{n}" for kind in ("zeroshot", "linear") for n in (2, 4)} | {"BioCLIP-zeroshot4"}


def test_the_real_study_plans_the_bioclip_models_and_their_weights(tmp_path):
    """`snakemake -n --configfile config/amphiprion.yaml`: only that BioCLIP is in the plan."""
    project = make_project(tmp_path, config=None)
    study = (project / "config" / "amphiprion.yaml").read_text()
    assert "hf-hub:imageomics/bioclip-2" in study
    counts, jobs = planned(project, configfiles=[project / "config" / "amphiprion.yaml"])
    for model in BIOCLIP_MODELS:
        assert f"train_model[model={model}]" in jobs and f"evaluate_model[model={model}]" in jobs
    weights_jobs = {job for job in jobs if job.startswith("open_clip_weights[")}
    assert weights_jobs == {
        f"open_clip_weights[cache=resources/weights/open_clip, org=imageomics, repo={repo}]"
        for repo in ("bioclip", "bioclip-2")
    }
    assert {"cache_images[dataset=two_species, size=224]", "cache_images[dataset=four_species, size=224]"} <= jobs
