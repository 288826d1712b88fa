"""Crops: the chosen box, the margin, the content-addressed name, the provenance and the review queue."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fishid.detect import crops


def rows(image, *found, detector="synthetic"):
    return [
        {"image": image, "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "score": score, "detector": detector}
        for b, score in found
    ]


def test_padded_box_by_hand():
    assert crops.padded_box((10, 20, 50, 40), 0.1, (100, 100)) == (6, 18, 54, 42)
    assert crops.padded_box((10.5, 20.5, 50.2, 40.2), 0.0, (100, 100)) == (10, 20, 51, 41)  # outwards
    assert crops.padded_box((0, 0, 50, 40), 0.25, (60, 45)) == (0, 0, 60, 45)  # clamped
    with pytest.raises(ValueError, match="outside"):
        crops.padded_box((70, 10, 80, 20), 0.0, (60, 45))


def test_the_largest_sure_box_is_chosen():
    table = pd.DataFrame(
        rows("a", ((0, 0, 10, 10), 0.9), ((0, 0, 30, 30), 0.6), ((0, 0, 50, 50), 0.3), ((5, 5, 35, 35), 0.7))
    )
    chosen = crops.chosen_box(table, 0.5)
    # Of the boxes at 0.5 or more, the two largest tie on area: the better scored wins.
    assert (chosen["x0"], chosen["score"]) == (5, 0.7)
    assert crops.chosen_box(table, 0.95) is None
    assert crops.chosen_box(table.iloc[:0], 0.0) is None


def test_crop_of_a_resized_copy_is_in_original_pixels():
    photo = Image.new("RGB", (80, 60))
    piece, cut = crops.crop(photo, (40, 30, 120, 90), 0.0, original_size=(160, 120))
    assert cut == (40, 30, 120, 90)
    assert piece.size == (40, 30)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("fish", "faint", "empty"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path, quality=90)
        paths[name] = str(path)
    return paths


def test_crop_photos_names_and_records_every_crop(photos, tmp_path):
    table = pd.DataFrame(
        rows("fish", ((20, 30, 100, 70), 0.8), ((0, 0, 10, 10), 0.95)) + rows("faint", ((0, 0, 50, 50), 0.2))
    )
    made, review = crops.crop_photos(table, photos, tmp_path / "crops", "synthetic", threshold=0.5, padding=0.1)
    assert list(made.columns) == crops.CROP_COLUMNS and list(review.columns) == crops.REVIEW_COLUMNS
    (row,) = made.to_dict("records")
    assert row["image"] == "fish" and (row["x0"], row["y0"], row["x1"], row["y1"]) == (20, 30, 100, 70)
    assert (row["score"], row["detector"], row["padding"]) == (0.8, "synthetic", 0.1)
    assert (row["crop_x0"], row["crop_y0"], row["crop_x1"], row["crop_y1"]) == (12, 26, 108, 74)
    stored = tmp_path / "crops" / row["path"]
    data = stored.read_bytes()
    assert row["crop"] == hashlib.sha256(data).hexdigest() and crops.crop_name(data) == (row["crop"], row["path"])
    assert row["path"] == f"{row['crop'][:2]}/{row['crop']}.png"
    with Image.open(stored) as piece, Image.open(photos["fish"]) as photo:
        assert piece.size == (96, 48)
        assert np.array_equal(np.asarray(piece), np.asarray(photo)[26:74, 12:108])
    # No photo is dropped unseen: each one without a crop is queued for review, saying why.
    assert review.to_dict("records") == [
        {"image": "faint", "reason": "no_fish_found", "detector": "synthetic", "best_score": 0.2, "threshold": 0.5},
        {"image": "empty", "reason": "no_fish_found", "detector": "synthetic", "best_score": "", "threshold": 0.5},
    ]


def test_the_same_crop_twice_is_stored_once(photos, tmp_path):
    table = pd.DataFrame(rows("fish", ((20, 30, 100, 70), 0.8)))
    first, _ = crops.crop_photos(table, {"fish": photos["fish"]}, tmp_path / "crops", "synthetic", 0.5, 0.1)
    second, _ = crops.crop_photos(table, {"fish": photos["fish"]}, tmp_path / "crops", "synthetic", 0.5, 0.1)
    assert first.equals(second)
    assert len(list((tmp_path / "crops").rglob("*.png"))) == 1
