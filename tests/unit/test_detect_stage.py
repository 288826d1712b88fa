"""The detect stage's own choices: whose boxes are known, which photos the detector may learn
from, and how its score is counted."""

import pandas as pd
from test_detect_synthetic_boxes import demo_records

from fishid.detect import scope, stage
from fishid.sources import synthetic_boxes


def photos_of(records) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": [f"img{i}" for i in range(len(records))],
            "path": "",
            "width": 160,
            "height": 120,
            "record_ids": [r["record_id"] for r in records],
        }
    )


def test_only_a_synthetic_source_has_known_boxes():
    """A record of any other source carries no box, whatever its media_url claims."""
    records = pd.DataFrame(demo_records(count=2))[["record_id", "source", "media_url"]]
    records.loc[1, "source"] = "gbif"  # a hostile server may serve a "synthetic:" URL
    truth = stage.known_truth(photos_of(records.to_dict("records")), records, ["synthetic"])
    assert list(truth["image"]) == [f"img{i}" for i in range(len(records)) if i != 1]
    first = truth.iloc[0]
    assert first["boxes"] == synthetic_boxes.fish_boxes(records.loc[0, "media_url"]) and first["boxes"]
    assert first["scene"]


def test_held_out_photos_are_those_any_dataset_holds_out():
    splits = [
        pd.DataFrame([(s, r) for s, r in rows], columns=["sha256", "split"])
        for rows in ([("p1", "train"), ("p2", "val"), ("p3", "test")], [("p1", "test"), ("p4", "train")])
    ]
    assert scope.held_out(splits) == {"p1", "p2", "p3"}
    assert scope.held_out(splits, "test") == {"p1", "p3"}


def test_quality_counts_by_hand():
    truth = pd.DataFrame(
        [
            {"image": "a", "boxes": [(0, 0, 10, 10)], "scene": "wide"},
            {"image": "b", "boxes": [(0, 0, 10, 10), (20, 20, 30, 30)], "scene": "wide"},
        ]
    )
    found = pd.DataFrame(
        [
            {"image": "a", "x0": 0, "y0": 0, "x1": 10, "y1": 10, "score": 0.9, "detector": "d"},
            {"image": "b", "x0": 0, "y0": 0, "x1": 10, "y1": 4, "score": 0.3, "detector": "d"},
            {"image": "elsewhere", "x0": 0, "y0": 0, "x1": 10, "y1": 10, "score": 0.9, "detector": "d"},
        ]
    )
    result = stage.quality(found, truth, min_score=0.5)
    # One of three fish found (IoU 1); b's box overlaps its first fish by 0.4: missed, and below
    # min_score, so b counts as a photo without a box. AP: precision 1 at recall 1/3, nothing after.
    assert result == {
        "photos": 2,
        "fish": 3,
        "map50": round(1 / 3, 4),
        "mean_iou": round(1 / 3, 4),
        "photos_without_box": 1,
    }


def clean_of(records) -> pd.DataFrame:
    """A clean table's columns the detect stage reads, every photo kept."""
    return pd.DataFrame(
        {
            "sha256": [f"img{i}" for i in range(len(records))],
            "kept": "True",
            "width": "160",
            "height": "120",
            "derived_path": [f"d/img{i}.jpg" for i in range(len(records))],
            "record_ids": [r["record_id"] for r in records],
        }
    )


def test_the_detector_trains_on_the_kept_photos_with_boxes_that_no_split_holds_out():
    """Its rows (and their digest, rule train_detector's params) change with a held-out photo or
    a photo's exclusion, and not with what it does not read (a label)."""
    records = pd.DataFrame(demo_records(count=2))[["record_id", "source", "media_url"]].head(6)
    clean = clean_of(records.to_dict("records"))
    splits = [pd.DataFrame({"sha256": ["img0", "img1"], "split": ["val", "train"]})]
    rows = scope.training_rows(clean, records, splits, ["synthetic"], most=10, seed=0)
    assert list(rows["image"]) == ["img1", "img2", "img3", "img4", "img5"]
    assert list(rows.columns) == [*scope.PHOTO_COLUMNS, "url"]
    digest = scope.digest(rows)
    relabelled = clean.assign(taxon="Amphiprion ocellaris")
    assert scope.digest(scope.training_rows(relabelled, records, splits, ["synthetic"], 10, 0)) == digest
    excluded = clean.assign(kept=["True"] * 5 + ["False"])
    assert scope.digest(scope.training_rows(excluded, records, splits, ["synthetic"], 10, 0)) != digest
    held = [splits[0].assign(split="test")]
    assert scope.digest(scope.training_rows(clean, records, held, ["synthetic"], 10, 0)) != digest
    sample = scope.training_rows(clean, records, splits, ["synthetic"], most=3, seed=0)
    assert len(sample) == 3 and list(sample["image"]) == sorted(sample["image"])
    # A photo outside the sample excluded: the same sample (the detector is not trained again);
    # one inside it: another candidate takes its place, the others stay.
    outside = next(i for i in range(1, 6) if f"img{i}" not in set(sample["image"]))
    without = clean.assign(kept=["False" if i == outside else "True" for i in range(6)])
    assert scope.digest(scope.training_rows(without, records, splits, ["synthetic"], 3, 0)) == scope.digest(sample)
    inside = int(sample["image"].iloc[0].removeprefix("img"))
    without = clean.assign(kept=["False" if i == inside else "True" for i in range(6)])
    resampled = set(scope.training_rows(without, records, splits, ["synthetic"], 3, 0)["image"])
    assert len(resampled) == 3 and resampled > set(sample["image"]) - {f"img{inside}"}
    assert f"img{inside}" not in resampled
