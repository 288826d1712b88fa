"""The known boxes of synthetic pictures: each holds the pixels its fish changes, and no more."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from fishid.sources import synthetic, synthetic_boxes, synthetic_render, synthetic_scene

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())
SPECIES = ["Amphiprion clarkii", "Amphiprion ocellaris", "Premnas biaculeatus"]


def demo_records(scenes=None, nuisances=None, count=12, defects=None) -> list[dict]:
    source = DEMO["sources"]["synthetic"]
    spec = {key: source[key] for key in ("individuals", "scenes", "nuisances")}
    spec["scenes"] = scenes or spec["scenes"]
    spec["nuisances"] = spec["nuisances"] if nuisances is None else nuisances
    patterns = synthetic.load_patterns(REPO / source["patterns"])
    realism = synthetic_scene.check_realism(spec)
    counts = dict.fromkeys(SPECIES, count)
    return synthetic.list_records(patterns, counts, DEMO["seed"], source["size"], realism, defects)


def sharp(params: dict) -> dict:
    """The picture without what spreads a fish's pixels beyond its outline (blur, noise, shadow)."""
    drop = ("defocus", "motion", "shadow")
    return {key: value for key, value in params.items() if key not in drop} | {"blur": 0.0, "noise": 0.0}


def changed_pixels(pattern, params, size, monkeypatch) -> np.ndarray:
    """Where the picture with its fish differs from the same picture without any fish."""
    with_fish = np.asarray(synthetic_scene.render_photo(pattern, params, size), np.int16)
    width, height = size

    def no_fish(*args, **kwargs):
        return np.zeros((height, width, 3), np.float32), np.zeros((height, width), np.float32)

    with monkeypatch.context() as patch:
        patch.setattr(synthetic_render, "_fish_layer", no_fish)
        without = np.asarray(synthetic_scene.render_photo(pattern, params, size), np.int16)
    return np.abs(with_fish - without).max(axis=2)


def check_boxes(record, monkeypatch) -> list:
    pattern, params, size = synthetic_render.decode_url(record["media_url"])
    params = sharp(params)
    boxes = synthetic_boxes.boxes_of(pattern, params, size)
    changed = changed_pixels(pattern, params, size, monkeypatch)
    inside = np.zeros(changed.shape, bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
        # Tight: every edge of the box runs through pixels that the fish changed (a dark fish in a dark
        # scene changes its fin tips by a level or two).
        box = changed[y0:y1, x0:x1] > 0
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any(), (record["record_id"], boxes)
        inside[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = True
    # Holding: a pixel the fish changes by more than a quarter-covered edge pixel can lies in a box
    # (or its one-pixel rim, where a partly covered edge pixel can be).
    outside = (changed > 40) & ~inside
    assert outside.sum() <= 3, (record["record_id"], boxes, np.argwhere(outside)[:5])
    return boxes


@pytest.mark.parametrize("scene", synthetic_scene.SCENES)
def test_boxes_hold_the_fish_of_each_scene(scene, monkeypatch):
    records = demo_records({scene: 1}, count=4)
    for record in records:
        assert len(check_boxes(record, monkeypatch)) >= 1


def test_a_school_has_a_box_per_fish(monkeypatch):
    records = demo_records({"anemone": 1, "wide": 1}, {"school": 1.0}, count=6)
    counts = []
    for record in records:
        _, params, _ = synthetic_render.decode_url(record["media_url"])
        boxes = check_boxes(record, monkeypatch)
        assert len(boxes) <= len(params["fish"]) + 1
        counts.append(len(boxes) - len(params["fish"]) - 1)
    # Fish do overlap and leave the frame at times, but most are seen whole.
    assert counts.count(0) >= len(counts) * 0.7, counts


def test_occluded_fish_have_boxes_of_what_shows(monkeypatch):
    for record in demo_records({"anemone": 1}, {"occlusion": 1.0}, count=4):
        check_boxes(record, monkeypatch)


def test_wide_fish_are_small():
    for record in demo_records({"wide": 1}, count=4):
        (x0, y0, x1, y1), *_ = synthetic_boxes.fish_boxes(record["media_url"])
        assert (x1 - x0) * (y1 - y0) < 0.15 * 160 * 120


# SHA-256 (first 16 hex digits) of the pixels render_photo drew before it read its poses from
# fish_poses (3f8c759's tree): schools and occluders, the layers the boxes read.
PIXELS_BEFORE = {
    "synthetic:Amphiprion_clarkii-00000": "ed7cee5fb1370a79",
    "synthetic:Amphiprion_clarkii-00001": "6bae28c226f9ed96",
    "synthetic:Amphiprion_ocellaris-00000": "a9beb18c77b10b24",
    "synthetic:Amphiprion_ocellaris-00001": "8a9c096c08ef3e38",
    "synthetic:Premnas_biaculeatus-00000": "6680704673658477",
    "synthetic:Premnas_biaculeatus-00001": "8634148188f1d884",
}


def test_render_unchanged_by_the_shared_poses():
    records = demo_records({"anemone": 1, "wide": 1}, {"school": 1.0, "occlusion": 0.5}, count=2)
    drawn = {
        r["record_id"]: hashlib.sha256(synthetic.render_url(r["media_url"]).tobytes()).hexdigest()[:16] for r in records
    }
    assert drawn == PIXELS_BEFORE


def test_pictures_that_are_no_photos_have_no_boxes():
    defects = dict.fromkeys(("drawing", "stamp", "greyscale", "html", "near_duplicate", "ethanol"), 2)
    records = demo_records({"anemone": 1}, {}, count=3, defects=defects)
    by_kind = {}
    for record in records:
        _, params, _ = synthetic_render.decode_url(record["media_url"])
        kind = params.get("defect", "photo")
        by_kind.setdefault(kind, []).append(synthetic_boxes.fish_boxes(record["media_url"]))
    for kind in ("drawing", "stamp", "greyscale", "html"):
        assert by_kind[kind] == [[], []], kind
    assert all(len(boxes) == 1 for boxes in by_kind["ethanol"] + by_kind["photo"])


def test_a_near_duplicate_has_its_originals_box_in_its_own_pixels():
    records = demo_records({"anemone": 1}, {}, count=3, defects={"near_duplicate": 2})
    originals = {record["record_id"]: record for record in records}
    for record in records:
        pattern, params, size = synthetic_render.decode_url(record["media_url"])
        if "copy" not in params:
            continue
        (box,) = synthetic_boxes.fish_boxes(record["media_url"])
        (original,) = synthetic_boxes.fish_boxes(originals[params["copy_of"]]["media_url"])
        scale = params["copy"]["scale"]
        for new, old in zip(box, original):
            assert abs(new - old * scale) <= 2
        served = synthetic.served_bytes(record["media_url"])
        from io import BytesIO

        from PIL import Image

        width, height = Image.open(BytesIO(served)).size
        assert box[2] <= width and box[3] <= height


def test_coverage_box_of_a_hand_made_layer():
    cover = np.zeros((10, 12), np.float32)
    cover[2:5, 3:9] = 1.0
    cover[5, 4] = 0.25  # a quarter-covered edge pixel is not the fish's
    assert synthetic_boxes.coverage_box(cover, min_pixels=1) == (3, 2, 9, 5)
    assert synthetic_boxes.coverage_box(cover, min_pixels=19) is None
