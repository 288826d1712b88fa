"""The boxes a detector found are kept per photo (fishid.detect.found): a rerun looks only at the
photos this detector has not looked at, gives the boxes a fresh look would, and starts afresh
for a retrained detector."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_detect_detectors import TINY_SETTINGS, bright_squares

from fishid.detect import detectors, found, infer

torch.set_num_threads(1)


class Counting(torch.nn.Module):
    """A detector that counts the photos it is shown."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, images):
        self.seen += len(images)
        return self.model(images)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    images, truth = bright_squares(6)
    model, _ = detectors.train_synthetic(images, truth, TINY_SETTINGS)
    return detectors.save_synthetic(model, TINY_SETTINGS, tmp_path_factory.mktemp("detector"), trained_on=7)


def same_boxes(ours, theirs) -> bool:
    """The same boxes of the same photos, up to the last bits of float arithmetic, which depend on
    how many photos a batch holds."""
    return (
        list(ours["image"]) == list(theirs["image"])
        and np.allclose(ours[found.VALUES], theirs[found.VALUES], rtol=0, atol=1e-4)
        and list(ours["detector"]) == list(theirs["detector"])
    )


def photos(folder, count, seed=1, sizes=((160, 120),)):
    images, _ = bright_squares(count, seed)
    paths = {}
    for i, image in enumerate(images[:count]):
        pixels = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        path = folder / f"{seed}-{i}.png"
        Image.fromarray(pixels).resize(sizes[i % len(sizes)]).save(path)
        paths[f"photo{seed}-{i}"] = str(path)
    return paths


def test_a_rerun_looks_only_at_new_photos_and_finds_what_a_fresh_look_finds(detector, tmp_path):
    model = Counting(detectors.load_detector("synthetic", detector))
    shown = photos(tmp_path, 5, sizes=((160, 120), (120, 160)))
    sizes = {image: (320, 240) for image in shown}
    cache = tmp_path / "found"

    first, looked_before = found.detect(model, shown, "synthetic", sizes, cache, detector)
    assert (looked_before, model.seen) == (0, 5)
    fresh = infer.detect(detectors.load_detector("synthetic", detector), shown, "synthetic", sizes)
    assert same_boxes(first, fresh)
    assert len(fresh) > 0, "the test needs boxes to compare"

    more = {**photos(tmp_path, 2, seed=2), **shown}
    model.seen = 0
    again, looked_before = found.detect(model, more, "synthetic", sizes, cache, detector)
    assert (looked_before, model.seen) == (5, 2)
    assert list(dict.fromkeys(again["image"])) == [i for i in more if i in set(again["image"])]
    assert again[again["image"].isin(shown)].reset_index(drop=True).equals(first)
    assert same_boxes(again, infer.detect(detectors.load_detector("synthetic", detector), more, "synthetic", sizes))


def test_a_photo_without_a_fish_is_kept_as_such(detector, tmp_path):
    empty = tmp_path / "empty.png"
    Image.new("RGB", (160, 120), (77, 77, 77)).save(empty)
    model = Counting(detectors.load_detector("synthetic", detector))
    model.model.score_thresh = 1.0  # nothing passes: no box
    table, _ = found.detect(model, {"empty": str(empty)}, "synthetic", {}, tmp_path / "found", detector)
    assert table.empty
    table, looked_before = found.detect(model, {"empty": str(empty)}, "synthetic", {}, tmp_path / "found", detector)
    assert (looked_before, model.seen, len(table)) == (1, 1, 0)


def test_a_new_detector_a_new_derived_copy_or_a_broken_entry_is_looked_at_again(detector, tmp_path):
    shown = photos(tmp_path, 3)
    sizes = {image: (160, 120) for image in shown}
    cache = tmp_path / "found"
    model = Counting(detectors.load_detector("synthetic", detector))
    found.detect(model, shown, "synthetic", sizes, cache, detector)

    retrained = tmp_path / "retrained"
    shutil.copytree(detector, retrained)
    meta = json.loads((retrained / detectors.META).read_text())
    (retrained / detectors.META).write_text(json.dumps({**meta, "trained_on": 8}))
    model.seen = 0
    _, looked_before = found.detect(model, shown, "synthetic", sizes, cache, retrained)
    assert (looked_before, model.seen) == (0, 3)

    first, second, _ = shown
    Image.open(shown[first]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(shown[first])
    root = cache / found.detector_key(detector, "synthetic")
    (root / found.photo_key(shown[second], sizes[second])[:2]).joinpath(
        f"{found.photo_key(shown[second], sizes[second])}.json"
    ).write_text('{"not": "boxes"}')
    model.seen = 0
    _, looked_before = found.detect(model, shown, "synthetic", sizes, cache, detector)
    assert (looked_before, model.seen) == (1, 2)
    assert not list(cache.rglob("*.part"))


def test_an_entry_follows_the_original_size():
    assert found.photo_key(__file__, (160, 120)) != found.photo_key(__file__, (320, 240))
    assert found.photo_key(__file__, (160, 120)) == found.photo_key(__file__, [160, 120])


def test_a_photos_boxes_do_not_depend_on_the_photos_looked_at_with_it(detector, tmp_path):
    """What makes an entry the photo's own: torchvision's detectors pad a batch of photos of
    several sizes to the largest, so photos are batched by size."""
    model = detectors.load_detector("synthetic", detector)
    shown = photos(tmp_path, 4, sizes=((160, 120), (96, 160)))
    together = infer.detect(model, shown, "synthetic", {}, batch_size=4)
    alone = [infer.detect(model, {image: path}, "synthetic", {}) for image, path in shown.items()]
    assert same_boxes(together, pd.concat(alone, ignore_index=True))
