"""The `owlv2` detector the way the pipeline reads it: from huggingface_hub's cache layout under
resources/weights, never from the network, safetensors only. A tiny OWLv2 with random weights
(and a tiny CLIP tokenizer) stands in for google/owlv2-base-patch16-ensemble, written exactly as a
download leaves it (models--org--name/{blobs,refs,snapshots}), and goes through the same code as
rule fetch_detector and rule detect_fish: fetch, load, infer."""

import hashlib
import json
import logging
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import constants
from PIL import Image
from projectrun import make_project, planned
from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

from fishid import cli, variants
from fishid.config import detect_settings, load_schema
from fishid.detect import boxes, detectors, infer, owlv2, stage
from fishid.models.weights import WeightsUnavailable

torch.set_num_threads(1)
REPO_ID = "test-org/tiny-owlv2"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
REAL = "google/owlv2-base-patch16-ensemble"
# A CLIP vocabulary in miniature: "!" first (CLIP's pad token, id 0), then letters, then the
# start and end tokens. OWLv2 counts a query only where its first token id is above 0.
LETTERS = list(string.ascii_lowercase)
VOCAB = {"!": 0} | {s: i + 1 for i, s in enumerate([*LETTERS, *(c + "</w>" for c in LETTERS)])}
VOCAB |= {"<|startoftext|>": len(VOCAB), "<|endoftext|>": len(VOCAB) + 1}
SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}
INPUT = 64  # the tiny model's square input, in pixels (OWLv2's own: 960)


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """No test may reach the Hub: huggingface_hub refuses every request (HF_HUB_OFFLINE)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def tiny_files(staging) -> dict[str, bytes]:
    """The files of a tiny OWLv2 repository, named as google/owlv2-base-patch16-ensemble's are."""
    text = {"vocab_size": len(VOCAB), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "max_position_embeddings": 16}
    text |= {"bos_token_id": VOCAB["<|startoftext|>"], "eos_token_id": VOCAB["<|endoftext|>"], "pad_token_id": 0}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"image_size": INPUT, "patch_size": 16}
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16))
    # Random weights put boxes anywhere, often flat; without the box head's last layer each patch
    # proposes its own square (OWLv2's box bias), as a trained model's boxes sit near their patch.
    torch.nn.init.zeros_(model.box_head.dense2.weight)
    torch.nn.init.zeros_(model.box_head.dense2.bias)
    model.save_pretrained(staging)
    Owlv2ImageProcessor(size={"height": INPUT, "width": INPUT}).to_json_file(staging / "preprocessor_config.json")
    files = {name: (staging / name).read_bytes() for name in ("config.json", "model.safetensors")}
    files["preprocessor_config.json"] = (staging / "preprocessor_config.json").read_bytes()
    files["vocab.json"] = json.dumps(VOCAB).encode()
    files["merges.txt"] = b"#version: 0.2\n"
    tokenizer = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 16, **SPECIAL}
    files["tokenizer_config.json"] = json.dumps(tokenizer).encode()
    files["special_tokens_map.json"] = json.dumps(SPECIAL).encode()
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp("staging"))


def write_download(cache, files: dict[str, bytes], repo_id=REPO_ID):
    """The cache as `hf_hub_download` leaves it: content-addressed blobs, the commit's snapshot
    folder of links to them, refs/main naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for folder in (repo / "blobs", repo / "refs", snapshot):
        folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(f"../../blobs/{blob.name}")
    return snapshot


def settings(cache, model=REPO_ID, **more):
    """detect.owlv2 as a configuration gives it, the schema's defaults filled in."""
    config = {"detect": {"detector": "owlv2", "owlv2": {"model": model, "cache": str(cache), **more}}}
    return detect_settings(config)["owlv2"]


@pytest.fixture
def fetched(tmp_path, files):
    """The detector's folder as rule fetch_detector leaves it, offline, in a project's layout."""
    cache = tmp_path / "resources/weights/transformers"
    write_download(cache, files)
    folder = tmp_path / "results/detect/owlv2"
    detectors.fetch_detector("owlv2", settings(cache, queries=["a photo of a fish", "a fish"]), folder, False)
    return folder


def photo(width, height, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_detector_tables_agree_with_each_other_and_the_schema():
    schema = load_schema()
    assert schema["$defs"]["detector"]["enum"] == list(detectors.DETECTORS) == list(variants.TRAINED_DETECTORS)
    for name, kind in detectors.DETECTORS.items():
        trained = variants.TRAINED_DETECTORS[name]
        assert (kind.train is not None, kind.save is not None, kind.fetch is None) == (trained,) * 3


def test_the_schema_fills_in_owlv2s_defaults_under_what_a_config_gives():
    given = detect_settings({"detect": {"detector": "owlv2", "owlv2": {"queries": ["a clownfish"]}}})
    assert given["owlv2"] == {"model": REAL, "queries": ["a clownfish"], "cache": "resources/weights/transformers"}
    assert detect_settings({"detect": {}})["owlv2"]["queries"] == ["a photo of a fish"]


def test_fetch_records_the_snapshot_and_each_files_hash(fetched, files):
    record = json.loads((fetched / owlv2.META).read_text())
    assert record["detector"] == "owlv2"
    assert record["settings"]["queries"] == ["a photo of a fish", "a fish"]
    assert record["settings"]["score_thresh"] == owlv2.OWLV2_DEFAULTS["score_thresh"]
    snapshot = record["snapshot"]
    assert snapshot["model"] == REPO_ID and snapshot["revision"] == COMMIT
    assert set(snapshot["files"]) == set(files) == {*owlv2.LAYOUT.files, *owlv2.LAYOUT.weights}
    for name, data in files.items():
        assert snapshot["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_boxes_come_back_in_the_photos_own_pixels(fetched):
    """OWLv2 pads a photo to a square: the boxes of a wide photo are those of the same photo padded
    by hand (the same input to the network), clipped to the photo."""
    model = detectors.load_detector("owlv2", fetched)
    wide = photo(150, 50)
    square = Image.new("RGB", (150, 150))  # black: the processor pads with zeros too
    square.paste(wide)
    mine = infer.detect_image(model, wide, "wide", "owlv2")
    theirs = infer.detect_image(model, square, "square", "owlv2")
    assert list(mine.columns) == boxes.BOX_COLUMNS and set(mine["detector"]) == {"owlv2"}
    assert len(mine) > 0 and mine["score"].between(0, 1).all()
    assert mine["x0"].ge(0).all() and mine["x1"].le(150).all() and mine["y0"].ge(0).all() and mine["y1"].le(50).all()
    # Each box holds some of the photo: one that lay all in the padding is dropped, not flattened onto its edge.
    assert (mine["x0"] < mine["x1"]).all() and (mine["y0"] < mine["y1"]).all()
    # The best box survives suppression in both: the same box, clipped to the wide photo.
    best, expected = mine.iloc[0], theirs.iloc[0]
    assert best["score"] == pytest.approx(expected["score"], abs=1e-5)
    clipped = [min(max(expected[c], 0), limit) for c, limit in zip(boxes.COORDINATES, (150, 50, 150, 50))]
    assert [best[c] for c in boxes.COORDINATES] == pytest.approx(clipped, abs=1e-3)


def test_detect_on_files_gives_rows_in_the_original_photos_pixels(fetched, tmp_path):
    model = detectors.load_detector("owlv2", fetched)
    paths = {}
    for i, (width, height) in enumerate([(120, 40), (40, 90), (64, 64)]):
        paths[f"photo{i}"] = str(tmp_path / f"{i}.png")
        photo(width, height, seed=i).save(paths[f"photo{i}"])
    # photo1 stands for a 4x larger original of which the file is the derived copy.
    table = infer.detect(model, paths, "owlv2", original_sizes={"photo1": (160, 360)}, batch_size=2)
    assert list(table.columns) == boxes.BOX_COLUMNS and set(table["detector"]) == {"owlv2"}
    assert set(table["image"]) == set(paths)
    assert (table.groupby("image").size() <= owlv2.OWLV2_DEFAULTS["detections_per_img"]).all()
    for image, (width, height) in {"photo0": (120, 40), "photo1": (160, 360), "photo2": (64, 64)}.items():
        rows = table[table["image"] == image]
        assert rows["x0"].ge(0).all() and rows["x1"].le(width + 1e-3).all(), image
        assert rows["y0"].ge(0).all() and rows["y1"].le(height + 1e-3).all(), image
        assert ((rows["x1"] - rows["x0"]) * (rows["y1"] - rows["y0"]) > 0).all(), image
    alone = infer.detect_image(model, Image.open(paths["photo1"]), "photo1", "owlv2")
    scaled = table[table["image"] == "photo1"][boxes.COORDINATES].to_numpy()
    assert np.allclose(scaled, alone[boxes.COORDINATES].to_numpy() * 4, atol=1e-3)


def test_a_relative_snapshot_is_the_projects_wherever_the_command_runs(fetched, tmp_path, monkeypatch):
    """A relative cache (the default) is recorded relative to the project, where the rules run;
    `fishid predict --results PROJECT/results` may run anywhere."""
    record = json.loads((fetched / owlv2.META).read_text())
    record["snapshot"]["folder"] = str(Path(record["snapshot"]["folder"]).relative_to(tmp_path))
    (fetched / owlv2.META).write_text(json.dumps(record))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = detectors.load_detector("owlv2", fetched)
    assert len(infer.detect_image(model, photo(50, 30), "p", "owlv2")) > 0


def test_offline_without_the_files_the_error_names_the_model_and_the_folder(tmp_path, caplog, capsys):
    cache = tmp_path / "resources/weights/transformers"
    for allow_download in (False, True):  # True: huggingface_hub is offline (HF_HUB_OFFLINE)
        with pytest.raises(WeightsUnavailable) as error:
            detectors.fetch_detector("owlv2", settings(cache, model=REAL), tmp_path / "out", allow_download)
        message = str(error.value)
        assert message.startswith(f"OWLv2 model {REAL} is not in the cache {cache}")
        assert f"{cache}/models--google--owlv2-base-patch16-ensemble/snapshots/main/" in message
        assert "model.safetensors" in message and "preprocessor_config.json" in message
        assert f"https://huggingface.co/{REAL}" in message
    assert not (tmp_path / "out" / owlv2.META).exists()

    # The rule's command: the same message, no traceback.
    caplog.set_level(logging.ERROR)
    spec = json.dumps(settings(cache, model=REAL))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fetch-detector", "--detector", "owlv2", "--spec", spec, "--offline", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 1
    assert REAL in caplog.text and "models--google--owlv2-base-patch16-ensemble/snapshots/main" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


def test_files_put_by_hand_in_snapshots_main_are_found(tmp_path, files):
    """What the offline message asks for: the files in models--org--name/snapshots/main/."""
    cache = tmp_path / "weights"
    folder = cache / "models--test-org--tiny-owlv2" / "snapshots" / "main"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    record = detectors.fetch_detector("owlv2", settings(cache), tmp_path / "detector", False)
    assert record["snapshot"]["revision"] == "main"
    model = detectors.load_detector("owlv2", tmp_path / "detector")
    assert len(infer.detect_image(model, photo(40, 40), "p", "owlv2")) > 0


def test_pickled_weights_are_refused(tmp_path, files, fetched):
    """pytorch_model.bin would run code as it loads: neither fetched nor loaded, and said so."""
    model = Owlv2ForObjectDetection.from_pretrained(
        json.loads((fetched / owlv2.META).read_text())["snapshot"]["folder"], local_files_only=True
    )
    pickled = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), pickled)
    cache = tmp_path / "bin-only"
    only_bin = {name: data for name, data in files.items() if name != "model.safetensors"}
    write_download(cache, only_bin | {"pytorch_model.bin": pickled.read_bytes()})
    with pytest.raises(WeightsUnavailable) as error:
        detectors.fetch_detector("owlv2", settings(cache), tmp_path / "detector", False)
    assert "missing: model.safetensors; pytorch_model.bin is there, but never read: a pickle" in str(error.value)

    # A folder fetched before whose safetensors file was swapped for a pickle: load refuses it.
    snapshot = fetched.parents[2] / "resources/weights/transformers/models--test-org--tiny-owlv2/snapshots" / COMMIT
    (snapshot / "model.safetensors").unlink()
    shutil.copy(pickled, snapshot / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin: refused: .* run as code; put model.safetensors from"):
        detectors.load_detector("owlv2", fetched)


def test_owlv2_is_used_as_it_comes_and_the_synthetic_one_is_not_fetched(tmp_path):
    with pytest.raises(ValueError, match="'owlv2' is used as it comes: it has nothing to train"):
        stage.train(None, None, [], [], [], "owlv2", {}, tmp_path)
    with pytest.raises(ValueError, match="'synthetic' is trained by the pipeline"):
        detectors.fetch_detector("synthetic", {}, tmp_path, False)


def test_a_config_with_owlv2_plans_the_fetch_and_no_training(tmp_path):
    """`snakemake -n` with detect.detector owlv2: the local fetch rule feeds detect_fish."""
    project = make_project(tmp_path)
    owl = {"detect": {"detector": "owlv2"}, "models": {"RI2-crop": {"crop": "owlv2"}}}
    counts, jobs = planned(project, owl)
    assert "fetch_detector[detector=owlv2]" in jobs and counts["fetch_detector"] == 1
    assert counts["detect_fish"] == 1 and "train_detector" not in counts
    assert "cache_crops[dataset=pair, size=48]" in jobs
    # The demo's own detector is still trained, and nothing fetched.
    counts, jobs = planned(project)
    assert counts["train_detector"] == 1 and "fetch_detector" not in counts
    local = yaml.safe_load((project / "profiles/slurm/config.yaml").read_text())["set-resources"]
    assert "fetch_detector" not in local  # a local rule: no partition to name
