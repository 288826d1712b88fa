"""Boxes: the table, IoU, mAP@0.5 and mean IoU, against values computed by hand."""

import math

import pandas as pd
import pytest

from fishid.detect import boxes


def test_iou_by_hand():
    assert boxes.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert boxes.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert boxes.iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no pixel
    assert boxes.iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)
    assert boxes.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    matrix = boxes.iou_matrix([(0, 0, 10, 10), (0, 0, 4, 4)], [(5, 0, 15, 10), (1, 1, 3, 3), (50, 50, 60, 60)])
    assert matrix.shape == (2, 3)
    assert matrix[1, 1] == pytest.approx(0.25) and matrix[0, 2] == 0.0


TRUTH = {"a": [(0, 0, 10, 10)], "b": [(0, 0, 10, 10), (20, 20, 30, 30)]}
PREDICTED = {
    "a": [((0, 0, 10, 10), 0.9)],  # hit
    "b": [
        ((0, 0, 10, 10), 0.8),  # hit
        ((0, 0, 10, 10), 0.7),  # the same fish again: a false positive
        ((50, 50, 60, 60), 0.6),  # nothing there: a false positive
        ((20, 20, 30, 30), 0.5),  # hit
    ],
    "not scored": [((0, 0, 5, 5), 0.99)],  # an image without truth is left out
}


def test_average_precision_by_hand():
    # Ranked: hit, hit, miss, miss, hit of 3 fish. Precision 1, 1, 2/3, 1/2, 3/5 at recall
    # 1/3, 2/3, 2/3, 2/3, 1; its envelope 1, 1, 2/3, 3/5, 3/5; the area 1/3 + 1/3 + 3/5 * 1/3.
    assert boxes.average_precision(TRUTH, PREDICTED) == pytest.approx(13 / 15)


def test_average_precision_edges():
    assert boxes.average_precision(TRUTH, {}) == 0.0
    assert math.isnan(boxes.average_precision({"a": []}, {"a": [((0, 0, 1, 1), 0.5)]}))
    perfect = {image: [(box, 1.0) for box in found] for image, found in TRUTH.items()}
    assert boxes.average_precision(TRUTH, perfect) == 1.0
    # A box on an image known to hold no fish costs precision only when it outranks the hits.
    with_empty = {**TRUTH, "empty": []}
    assert boxes.average_precision(with_empty, {**perfect, "empty": [((0, 0, 5, 5), 0.1)]}) == 1.0
    # Ranked first, it is a miss before three hits: precision 1/2, 2/3, 3/4 at recall 1/3, 2/3, 1,
    # whose envelope is 3/4 throughout.
    assert boxes.average_precision(with_empty, {**perfect, "empty": [((0, 0, 5, 5), 2.0)]}) == pytest.approx(3 / 4)
    # Under the IoU threshold: a miss; at it: a hit.
    assert boxes.average_precision({"a": [(0, 0, 10, 10)]}, {"a": [((5, 0, 15, 10), 1.0)]}) == 0.0
    assert boxes.average_precision({"a": [(0, 0, 10, 10)]}, {"a": [((0, 0, 10, 5), 1.0)]}) == 1.0


def test_mean_best_iou_by_hand():
    truth = {"a": [(0, 0, 10, 10)], "b": [(0, 0, 10, 10)]}
    found = {"a": [((5, 0, 15, 10), 0.9), ((0, 0, 10, 5), 0.3)]}
    assert boxes.mean_best_iou(truth, found) == pytest.approx((0.5 + 0.0) / 2)
    assert boxes.mean_best_iou(truth, found, min_score=0.5) == pytest.approx((1 / 3 + 0.0) / 2)
    assert math.isnan(boxes.mean_best_iou({"a": []}, found))


def test_table_round_trip(tmp_path):
    table = pd.DataFrame(
        [
            {"image": "b" * 64, "x0": 1.234, "y0": 2, "x1": 30, "y1": 40.5, "score": 0.51234, "detector": "synthetic"},
            {"image": "a" * 64, "x0": 0, "y0": 0, "x1": 10, "y1": 10, "score": 0.2, "detector": "synthetic"},
            {"image": "a" * 64, "x0": 5, "y0": 5, "x1": 9, "y1": 9, "score": 0.9, "detector": "synthetic"},
        ]
    )
    boxes.write_boxes(table, tmp_path / "boxes.tsv")
    text = (tmp_path / "boxes.tsv").read_text().splitlines()
    assert text[0] == "\t".join(boxes.BOX_COLUMNS)
    assert [line.split("\t")[5] for line in text[1:]] == ["0.9", "0.2", "0.5123"]  # by image, best first
    back = boxes.read_boxes(tmp_path / "boxes.tsv")
    assert back["x0"].tolist() == [5.0, 0.0, 1.23]
    found = boxes.predictions_of(back)
    assert found["a" * 64] == [((5.0, 5.0, 9.0, 9.0), 0.9), ((0.0, 0.0, 10.0, 10.0), 0.2)]
