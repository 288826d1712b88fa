"""Detectors: the `synthetic` one trains, saves and loads through the same code the stage uses,
and infer turns its output into boxes rows in the photos' original pixels."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fishid.config import section_with_defaults
from fishid.detect import boxes, detectors, infer

torch.set_num_threads(1)
TINY = {"widths": [4, 8, 32, 32], "head_convs": 1, "epochs": 2, "batch_size": 2, "warmup_steps": 2}
# As the rule hands them: detect.training with the schema's defaults (lr, seed) filled in.
TINY_SETTINGS = section_with_defaults(TINY, "detect", "training")


def bright_squares(count: int, seed: int = 0):
    """Grey pictures with one bright square each (the "fish") and its box."""
    rng = np.random.default_rng(seed)
    images, truth = [], []
    for _ in range(count):
        image = torch.full((3, 120, 160), 0.3)
        x, y, side = int(rng.integers(0, 100)), int(rng.integers(0, 60)), int(rng.integers(20, 50))
        image[:, y : y + side, x : x + side] = 0.9
        images.append(image)
        truth.append(torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32))
    images.append(torch.full((3, 120, 160), 0.3))  # a picture without a fish trains too
    truth.append(torch.zeros((0, 4)))
    return images, truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, truth = bright_squares(6)
    model, history = detectors.train_synthetic(images, truth, TINY_SETTINGS)
    folder = detectors.save_synthetic(model, TINY_SETTINGS, tmp_path_factory.mktemp("detector"), trained_on=len(images))
    return model, history, folder, images


def test_training_is_seeded_and_logged(trained):
    model, history, _, images = trained
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"classification", "bbox_regression", "bbox_ctrness"} <= set(history[0])
    again, _ = detectors.train_synthetic(*bright_squares(6), TINY_SETTINGS)
    for ours, theirs in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(ours, theirs)


def test_a_saved_detector_loads_and_predicts_the_same(trained):
    model, _, folder, images = trained
    meta = json.loads((folder / detectors.META).read_text())
    assert meta["detector"] == "synthetic" and meta["trained_on"] == 7
    assert meta["settings"] == detectors.SYNTHETIC_DEFAULTS | {"lr": 0.01, "seed": 0} | TINY  # the schema's defaults
    loaded = detectors.load_detector("synthetic", folder)
    with torch.no_grad():
        ours, theirs = model(images[:2]), loaded(images[:2])
    for a, b in zip(ours, theirs):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_missing_or_foreign_detectors_are_named(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="weights.pt and meta.json"):
        detectors.load_detector("synthetic", tmp_path)
    with pytest.raises(ValueError, match="unknown detector 'yolo'; known: synthetic"):
        detectors.load_detector("yolo", tmp_path)
    (tmp_path / detectors.WEIGHTS).write_bytes(b"")
    (tmp_path / detectors.META).write_text(json.dumps({"detector": "owlv2"}))
    with pytest.raises(ValueError, match="not 'synthetic'"):
        detectors.load_detector("synthetic", tmp_path)


def test_the_backbone_needs_one_width_at_its_levels():
    with pytest.raises(ValueError, match="one width"):
        detectors.build_synthetic({"widths": [8, 16, 32, 64], "levels": [8, 16]})
    with pytest.raises(ValueError, match="multiple of 32"):
        detectors.build_synthetic({"widths": [8, 16, 16, 16]})


def test_detect_gives_boxes_rows_in_original_pixels(trained, tmp_path):
    _, _, folder, images = trained
    model = detectors.load_detector("synthetic", folder)
    paths = {}
    for i, image in enumerate(images[:3]):
        path = tmp_path / f"{i}.png"
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
        paths[f"photo{i}"] = str(path)
    table = infer.detect(model, paths, "synthetic", original_sizes={"photo1": (320, 240)}, batch_size=2)
    assert list(table.columns) == boxes.BOX_COLUMNS
    assert set(table["detector"]) == {"synthetic"}
    # An untrained-ish model still reports its best guesses (score_thresh 0.05 keeps some, or none).
    assert table["score"].between(0, 1).all()
    assert (table.loc[table["image"] == "photo0", "x1"] <= 160).all()


def test_box_rows_scale_to_the_original():
    found = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "scores": torch.tensor([0.75])}
    (row,) = infer.box_rows("img", found, "synthetic", 160, 120, original_size=(320, 180))
    assert (row["x0"], row["y0"], row["x1"], row["y1"], row["score"]) == (20.0, 30.0, 60.0, 60.0, 0.75)


def test_settings_without_the_schemas_defaults_are_refused_by_name():
    """The defaults of detect.training are the schema's alone: a caller that did not fill them in
    is told which are missing, not trained with a copy of them."""
    with pytest.raises(ValueError, match="without lr, seed: hand detect.training with the defaults"):
        detectors.train_synthetic(*bright_squares(2), TINY)
