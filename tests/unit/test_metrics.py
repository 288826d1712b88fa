import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from fishid.evaluate import metrics

CLASSES = ["a", "b", "c"]
LABELS = ["a", "a", "a", "a", "b", "b", "c", "c", "c", "c"]
PREDICTED = ["a", "a", "a", "b", "b", "c", "c", "c", "a", "c"]


def test_confusion_precision_recall_f1_by_hand():
    matrix = metrics.confusion(LABELS, PREDICTED, CLASSES)
    assert matrix.tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    scores = metrics.precision_recall_f1(matrix)
    # a: precision 3/4, recall 3/4; b: 1/2, 1/2; c: 3/4, 3/4.
    assert scores["precision"] == pytest.approx([0.75, 0.5, 0.75])
    assert scores["recall"] == pytest.approx([0.75, 0.5, 0.75])
    assert scores["f1"] == pytest.approx([0.75, 0.5, 0.75])
    assert scores["support"].tolist() == [4, 2, 4]
    assert metrics.balanced_accuracy(matrix) == pytest.approx((0.75 + 0.5 + 0.75) / 3)


def test_unequal_precision_and_recall_and_a_class_never_predicted():
    matrix = metrics.confusion(["a", "a", "b", "b"], ["a", "a", "a", "a"], ["a", "b"])
    scores = metrics.precision_recall_f1(matrix)
    assert scores["precision"] == pytest.approx([0.5, 0.0])
    assert scores["recall"] == pytest.approx([1.0, 0.0])
    assert scores["f1"] == pytest.approx([2 * 0.5 * 1 / 1.5, 0.0])
    assert metrics.balanced_accuracy(matrix) == pytest.approx(0.5)


def test_classes_order_a_class_never_predicted_and_other_only_predicted():
    # As the evaluation builds them: the model's classes in its order, then "other", which
    # the threshold model predicts although no image here is one.
    classes = ["c", "a", "other"]
    labels = ["a", "a", "c", "c", "c"]
    predicted = ["a", "other", "a", "c", "other"]
    matrix = metrics.confusion(labels, predicted, classes)
    assert matrix.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 0]]
    assert matrix.tolist() == confusion_matrix(labels, predicted, labels=classes).tolist()
    scores = metrics.precision_recall_f1(matrix)
    # c: 1 of 1 called c is c, 1 of 3 found; a: 1 of 2, 1 of 2; other: 0 of 2 and no support.
    assert scores["precision"] == pytest.approx([1.0, 0.5, 0.0])
    assert scores["recall"] == pytest.approx([1 / 3, 0.5, 0.0])
    assert scores["f1"] == pytest.approx([0.5, 0.5, 0.0])
    assert scores["support"].tolist() == [3, 2, 0]
    # Mean recall over c and a only: "other" has no image to be recalled.
    assert metrics.balanced_accuracy(matrix) == pytest.approx((1 / 3 + 1 / 2) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true": as meant
        assert metrics.balanced_accuracy(matrix) == pytest.approx(balanced_accuracy_score(labels, predicted))


def test_a_label_outside_the_classes_is_an_error_not_left_out():
    with pytest.raises(KeyError):
        metrics.confusion(["a", "z"], ["a", "a"], ["a"])


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    p, n, trials = 0.7, 100, 200
    covered = 0
    for trial in range(trials):
        sample = rng.random(n) < p
        low, high = metrics.bootstrap_interval(sample, n_resamples=1000, seed=trial)
        covered += low <= p <= high
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_interval_narrows_with_more_data():
    small = metrics.bootstrap_interval(np.r_[np.ones(21), np.zeros(9)])
    large = metrics.bootstrap_interval(np.r_[np.ones(210), np.zeros(90)])
    assert small[0] < 0.7 < small[1] and large[0] < 0.7 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 2


def test_expected_calibration_error_by_hand():
    bins = metrics.calibration_bins([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10)
    assert [b["n"] for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[6]["confidence"] == pytest.approx(0.65)
    # (2 x |0.5 - 0.95| + 2 x |1 - 0.65|) / 4
    assert metrics.expected_calibration_error(bins) == pytest.approx(0.4)
    perfect = metrics.calibration_bins([1.0, 1.0, 0.5, 0.5], [1, 1, 1, 0], n_bins=2)
    assert metrics.expected_calibration_error(perfect) == pytest.approx(0.0)


def test_auroc_by_hand_with_ties():
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert metrics.auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert metrics.auroc([0.2, 0.9], [False, True]) == 1.0
    assert np.isnan(metrics.auroc([0.2, 0.9], [True, True]))


def test_open_set_curve_calls_low_confidence_other():
    rows = metrics.open_set_curve(
        top_score=[0.9, 0.6, 0.4, 0.3],
        predicted=["a", "b", "a", "b"],
        labels=["a", "b", "other", "other"],
        other_label="other",
        thresholds=[0.0, 0.5, 0.7],
    )
    assert [(r["known_accuracy"], r["other_accuracy"]) for r in rows] == [(1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]
    assert rows[1]["accuracy"] == 1.0


def test_pair_distance_accuracy_by_hand():
    embeddings = [[0, 0], [0, 1], [5, 0]]
    rows = metrics.pair_distance_accuracy(embeddings, ["a", "a", "b"], thresholds=[0.5, 2.0])
    assert rows[0] == {
        "threshold": 0.5,
        "accuracy": pytest.approx(2 / 3),
        "same_accuracy": 0.0,
        "different_accuracy": 1.0,
    }
    assert rows[1] == {"threshold": 2.0, "accuracy": 1.0, "same_accuracy": 1.0, "different_accuracy": 1.0}


def test_knn_votes_and_breaks_ties_by_the_nearest():
    train = [[0.0], [0.1], [1.0], [1.1], [5.0]]
    labels = ["a", "a", "b", "b", "c"]
    assert metrics.knn_predict(train, labels, [[0.05], [1.05]], k=3).tolist() == ["a", "b"]
    # k=2 at 0.6: one 'a' (0.1, distance 0.5) and one 'b' (1.0, distance 0.4): the nearer wins.
    assert metrics.knn_predict(train, labels, [[0.6]], k=2).tolist() == ["b"]


def test_distance_thresholds_cover_the_studys_range():
    from fishid.evaluate.stage import DISTANCES

    assert DISTANCES[0] == 0.3 and DISTANCES[-1] == 2.9 and len(DISTANCES) == 27


def evaluation(labels, predicted, train_labels):
    from fishid.evaluate.stage import add_confidences
    from fishid.evaluate.stage import metrics as evaluate_metrics

    scores = {f"score:{c}": [1.0 if p == c else 0.0 for p in predicted] for c in ("a", "b")}
    table = pd.DataFrame({"sha256": range(len(labels)), "label": labels, "predicted": predicted, **scores})
    return evaluate_metrics(add_confidences(table, ""), ["a", "b"], train_labels)


def test_a_model_that_learned_nothing_is_flagged_and_one_that_learned_is_not():
    labels = ["a"] * 60 + ["b"] * 40
    train = ["a"] * 6 + ["b"] * 4
    majority = evaluation(labels, ["a"] * 100, train)["learned_nothing"]
    assert majority[0] == "predicts 'a' for every image"
    assert majority[1].endswith("] does not clear the majority baseline 0.600") and len(majority) == 2
    # Right 65 times in 100 against a baseline of 60: not clearly better.
    coin = labels[:65] + ["a"] * 35
    (reason,) = evaluation(labels, coin, train)["learned_nothing"]
    assert "does not clear the majority baseline 0.600" in reason
    learned = labels[:90] + ["a" if label == "b" else "b" for label in labels[90:]]
    assert evaluation(labels, learned, train)["learned_nothing"] == []


def test_per_source_results_count_each_photo_under_every_source_that_listed_it():
    from fishid.evaluate.stage import MIN_SOURCE_PHOTOS, by_source

    predictions = pd.DataFrame(
        {
            "sha256": [f"{i:064x}" for i in range(30)],
            "label": ["a"] * 15 + ["b"] * 15,
            "predicted": ["a"] * 10 + ["b"] * 5 + ["b"] * 15,
        }
    )
    # Photos 0-24 from the field, 25-29 from a museum; photo 25 listed by both.
    sources = pd.Series(["field"] * 25 + ["field|museum"] + ["museum"] * 4, index=predictions["sha256"])
    result = by_source(predictions, sources, ["a", "b"])
    assert sorted(result) == ["field", "museum"]
    field, museum = result["field"], result["museum"]
    assert (field["n"], field["correct"], museum["n"], museum["correct"]) == (26, 21, 5, 5)
    assert field["confusion"] == [[10, 5], [0, 11]] and museum["confusion"] == [[0, 0], [0, 5]]
    assert field["accuracy_ci95"][0] < 21 / 26 < field["accuracy_ci95"][1]
    assert not field["too_few"] and museum["too_few"] and MIN_SOURCE_PHOTOS > 5
