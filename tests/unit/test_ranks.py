"""Predictions by rank (fishid.evaluate.ranks): roll-up sums, taxonomic distance, the fallback
rule's thresholds chosen on validation, and the by-rank numbers of metrics.json and the report,
all on a hand-made tree of two families, three genera and five species."""

import json

import numpy as np
import pandas as pd
import pytest

from fishid.evaluate import ranks
from fishid.evaluate.stage import THRESHOLDS, add_confidences
from fishid.evaluate.stage import metrics as evaluate_metrics
from fishid.report import html
from fishid.tables import SPLIT_COLUMNS

# Two families, three genera, five species; every class of the same order and above.
CLA, OCE, ARU, DIM, BIC = (
    "Amphiprion clarkii",
    "Amphiprion ocellaris",
    "Dascyllus aruanus",
    "Labroides dimidiatus",
    "Labroides bicolor",
)
CLASSES = [CLA, OCE, ARU, DIM, BIC]
GENUS = {CLA: "Amphiprion", OCE: "Amphiprion", ARU: "Dascyllus", DIM: "Labroides", BIC: "Labroides"}
FAMILY = {"Amphiprion": "Pomacentridae", "Dascyllus": "Pomacentridae", "Labroides": "Labridae"}
ABOVE = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Actinopterygii", "order": "Perciformes"}


def split_rows(labels, genus=None, family=None) -> pd.DataFrame:
    """A split table (SPLIT_COLUMNS) with one photo per label, ranks from the hand-made tree."""
    rows = []
    for i, label in enumerate(labels):
        g = GENUS.get(label, "") if genus is None else genus[i]
        f = FAMILY.get(g, "") if family is None else family[i]
        rows.append({"dataset": "d", "sha256": f"{i:064x}", "label": label, "split": "train", "taxon": label, **ABOVE})
        rows[-1].update(genus=g, family=f, sources="s", group="", derived_path="")
    return pd.DataFrame(rows).reindex(columns=SPLIT_COLUMNS).fillna("")


TREE = ranks.lineages(CLASSES, ranks.class_ranks(split_rows(CLASSES * 2)))


def scores(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CLASSES)


def test_roll_up_sums_each_genus_and_family_from_its_species():
    table = scores([0.1, 0.2, 0.3, 0.15, 0.25], [0.5, 0.0, 0.0, 0.5, 0.0])
    genus = ranks.roll_up(table, TREE, "genus")
    assert genus.columns.tolist() == ["Amphiprion", "Dascyllus", "Labroides"]
    assert genus.to_numpy() == pytest.approx(np.array([[0.3, 0.3, 0.4], [0.5, 0.0, 0.5]]))
    family = ranks.roll_up(table, TREE, "family")
    assert family.columns.tolist() == ["Labridae", "Pomacentridae"]
    assert family.to_numpy() == pytest.approx(np.array([[0.4, 0.6], [0.5, 0.5]]))
    names, top = ranks.top_at(table, TREE, "family")
    assert names.tolist() == ["Pomacentridae", "Labridae"] and top == pytest.approx([0.6, 0.5])


def test_distance_counts_the_steps_to_the_lowest_common_ancestor_and_back_down():
    answers = [(CLA, "species"), (OCE, "species"), (ARU, "species"), (DIM, "species")]
    answers += [("Amphiprion", "genus"), ("Dascyllus", "genus"), ("Labroides", "genus")]
    answers += [("Pomacentridae", "family"), ("Labridae", "family")]
    names, at = zip(*answers)
    # The truth is A. clarkii throughout; the two families meet at their order.
    assert ranks.steps([CLA] * len(names), names, at, TREE).tolist() == [0, 2, 4, 6, 1, 3, 5, 2, 4]
    assert ranks.steps([DIM, BIC], ["Labroides", "Amphiprion"], ["genus", "genus"], TREE).tolist() == [1, 5]


def test_an_empty_rank_is_no_common_ancestor():
    # A pooled "other" of two genera has no genus but the family its species share.
    split = split_rows([CLA, "other", "other", "mystery"], genus=["Amphiprion", "Amphiprion", "Dascyllus", ""])
    split.loc[3, [*ranks.UP[1:]]] = ""
    assigned = ranks.class_ranks(split)
    assert assigned.loc["other", "genus"] == "" and assigned.loc["other", "family"] == "Pomacentridae"
    tree = ranks.lineages([CLA, "other", "mystery"], assigned)
    labels = ["other", "other", "other", "mystery"]
    answers, at = ["other", CLA, "Amphiprion", CLA], ["species", "species", "genus", "species"]
    # other -> CLA meet at the family (2 + 2); a photo of no known rank meets CLA above the kingdom.
    assert ranks.steps(labels, answers, at, tree).tolist() == [0, 4, 3, 2 * ranks.ROOT]
    assert ranks.rank_accuracy(labels, answers[:2] + ["other", CLA], tree) == {
        "species": 0.5,
        "genus": 0.5,
        "family": 0.75,
    }


# Validation photos (true label, scores of CLA OCE ARU DIM BIC): V1-V4 sure and right at the species; V5-V7
# wrong at the species but right at the genus; V8 right only at the family; V9 wrong everywhere.
VALIDATION = [
    (CLA, [0.9, 0.05, 0.05, 0, 0]),
    (OCE, [0.05, 0.85, 0.1, 0, 0]),
    (ARU, [0, 0.1, 0.8, 0.1, 0]),
    (DIM, [0, 0, 0.05, 0.75, 0.2]),
    (CLA, [0.18, 0.62, 0.2, 0, 0]),
    (DIM, [0, 0, 0, 0.45, 0.55]),
    (OCE, [0.4, 0.3, 0.3, 0, 0]),
    (CLA, [0.1, 0.2, 0.42, 0.28, 0]),
    (BIC, [0.32, 0.1, 0.21, 0.2, 0.17]),
]


def test_fallback_thresholds_are_the_lowest_whose_answers_reach_the_target_on_validation():
    labels, rows = zip(*VALIDATION)
    grid = np.round(np.linspace(0, 1, 11), 1)
    # Species: at 0.6 V5 (0.62, wrong) joins V1-V4: 4/5. Genus, on V5-V9 only: at 0.4 V8 and V9
    # (0.42, wrong) join: 3/5. Family, on V8 (0.72, right) and V9 (0.63, wrong): 1/2 below 0.7.
    thresholds = ranks.choose_thresholds(scores(*rows), labels, TREE, grid)
    assert thresholds == {"species": 0.7, "genus": 0.5, "family": 0.7}
    answers, at = ranks.fallback(scores(*rows), TREE, thresholds)
    assert at.tolist() == ["species"] * 4 + ["genus"] * 3 + ["family", "none"]
    assert answers.tolist() == [CLA, OCE, ARU, DIM, "Amphiprion", "Labroides", "Amphiprion", "Pomacentridae", ""]
    # A rank whose answers never reach the target is never answered.
    assert ranks.choose_thresholds(scores(rows[-1]), labels[-1:], TREE, grid) == dict.fromkeys(ranks.FALLBACK)
    assert ranks.fallback(scores(rows[-1]), TREE, dict.fromkeys(ranks.FALLBACK))[1].tolist() == ["none"]


# Test photos under the thresholds chosen on VALIDATION with the evaluation's grid (species 0.65,
# genus 0.45, family 0.65): T1 right and T4 wrong at the species, T2 right and T5 wrong at the
# genus, T3 right at the family, T6 unanswered.
TEST = [
    (CLA, [0.75, 0.1, 0.15, 0, 0]),
    (CLA, [0.2, 0.4, 0.1, 0.2, 0.1]),
    (ARU, [0.35, 0.05, 0.3, 0.15, 0.15]),
    (DIM, [0, 0, 0, 0.28, 0.72]),
    (BIC, [0.32, 0.28, 0.1, 0.2, 0.1]),
    (OCE, [0.25, 0.15, 0.2, 0.2, 0.2]),
]


def predictions(photos) -> pd.DataFrame:
    labels, rows = zip(*photos)
    table = scores(*rows).add_prefix("score:")
    predicted = [CLASSES[int(np.argmax(row))] for row in rows]
    return pd.DataFrame({"sha256": range(len(labels)), "label": labels, "predicted": predicted}).join(table)


def test_by_rank_numbers_round_trip_through_the_evaluations_metrics():
    evaluated = add_confidences(predictions(TEST), "")
    result = evaluate_metrics(
        evaluated,
        CLASSES,
        [CLA, OCE, ARU, DIM, BIC],
        ranks=ranks.class_ranks(split_rows(CLASSES)),
        validation=predictions(VALIDATION),
    )
    by_rank = json.loads(json.dumps(result))["by_rank"]
    assert by_rank["genera"] == ["Amphiprion", "Dascyllus", "Labroides"]
    assert by_rank["families"] == ["Labridae", "Pomacentridae"]
    # Predicted CLA OCE CLA BIC CLA CLA for CLA CLA ARU DIM BIC OCE: genus right for T1 T2 T4 T6, family for all but T5.
    assert by_rank["accuracy"] == pytest.approx({"species": 1 / 6, "genus": 4 / 6, "family": 5 / 6})
    assert by_rank["mean_distance"] == pytest.approx((0 + 2 + 4 + 2 + 6 + 2) / 6)
    fallback = by_rank["fallback"]
    assert fallback["thresholds"] == {"species": 0.65, "genus": 0.45, "family": 0.65}
    assert fallback["chosen_on"] == "val" and fallback["target_accuracy"] == ranks.TARGET_ACCURACY
    assert fallback["answered"] == pytest.approx({"species": 2 / 6, "genus": 2 / 6, "family": 1 / 6, "none": 1 / 6})
    assert fallback["coverage"] == pytest.approx(2 / 6)
    assert fallback["accuracy"] == pytest.approx(3 / 5)
    assert fallback["accuracy_at"] == pytest.approx({"species": 0.5, "genus": 0.5, "family": 1.0})
    # T1 0, T4 2 (sibling), T2 1, T5 5 (a genus of the other family), T3 2.
    assert fallback["mean_distance"] == pytest.approx((0 + 2 + 1 + 5 + 2) / 5)
    curve = {row["threshold"]: row for row in by_rank["coverage_curve"]}
    assert [row["threshold"] for row in by_rank["coverage_curve"]] == THRESHOLDS.tolist()
    assert curve[0.0]["coverage"] == 1.0 and curve[0.0]["accuracy"] == pytest.approx(1 / 6)
    assert curve[0.7]["coverage"] == pytest.approx(2 / 6) and curve[0.7]["accuracy"] == 0.5
    assert curve[0.8] == {"threshold": 0.8, "coverage": 0.0, "accuracy": None}


def test_without_ranks_the_fallback_answers_the_species_or_nothing():
    result = evaluate_metrics(add_confidences(predictions(TEST), ""), CLASSES, CLASSES)["by_rank"]
    assert result["genera"] == [] and result["fallback"]["chosen_on"] == "the evaluated photos"
    assert result["fallback"]["thresholds"]["genus"] is None and result["fallback"]["answered"]["genus"] == 0.0
    assert result["accuracy"] == pytest.approx({"species": 1 / 6, "genus": 1 / 6, "family": 1 / 6})


def test_the_report_shows_a_by_rank_table_across_genera_and_a_line_within_one():
    evaluated = add_confidences(predictions(TEST), "")
    by_rank = evaluate_metrics(
        evaluated, CLASSES, CLASSES, ranks=ranks.class_ranks(split_rows(CLASSES)), validation=predictions(VALIDATION)
    )["by_rank"]
    shown = html.rank_view(by_rank, "test")
    assert shown["table"]["columns"][0] == "rank"
    rows = {row[0]: row for row in shown["table"]["rows"]}
    assert rows["genus"][1:] == ["0.667", "0.45", "0.333", "0.500"]
    assert rows["no answer"][1:] == ["", "", "0.167", ""]
    assert "0.600" in shown["summary"] and "val" in shown["summary"]
    one_genus = {**by_rank, "genera": ["Amphiprion"], "families": ["Pomacentridae"]}
    line = html.rank_view(one_genus, "test")
    assert line["table"] is None and "Amphiprion" in line["summary"]


def test_the_page_shows_each_models_ranks_escaped(tmp_path):
    from PIL import Image

    from fishid.report.figure_list import MODEL_FIGURES

    evaluated = add_confidences(predictions(TEST), "")
    measured = evaluate_metrics(
        evaluated, CLASSES, CLASSES, ranks=ranks.class_ranks(split_rows(CLASSES)), validation=predictions(VALIDATION)
    )
    hostile = "<script>alert(1)</script>"
    one_genus = {**measured["by_rank"], "genera": [hostile], "families": ["Pomacentridae"]}
    history = pd.DataFrame({"epoch": [1], "val_acc": [0.5]})
    results = {
        "wide": ({**measured, "model": "wide", "evaluated_on": "test"}, history),
        "narrow": ({**measured, "model": "narrow", "evaluated_on": "test", "by_rank": one_genus}, history),
    }
    for name in results:
        for f in MODEL_FIGURES:
            (tmp_path / name).mkdir(exist_ok=True)
            Image.new("RGB", (20, 10)).save(tmp_path / name / f"{f.stem}.png")
    records = pd.DataFrame({"record_id": ["r1"], "source": ["folder"], "license": ["CC0-1.0"], "taxon": [CLA]}).assign(
        rights_holder="A", creator="B", page_url="https://example.org/1"
    )
    downloads = pd.DataFrame({"record_id": ["r1"], "sha256": ["a" * 64], "error": [""]})
    clean = pd.DataFrame({"sha256": ["a" * 64], "kept": ["True"], "reason": [""]})
    pd.DataFrame({"label": [CLA], "train": [1]}).to_csv(tmp_path / "d.counts.tsv", sep="\t", index=False)
    config = {
        "report": {"title": "ranks"},
        "models": {name: {"arch": "tl", "dataset": "d"} for name in results},
    }
    page = html.page(config, records, downloads, clean, [tmp_path / "d.counts.tsv"], [], results, tmp_path)
    wide = page[page.index('id="model-wide"') : page.index('id="model-narrow"')]
    assert 'id="by-rank-wide"' in wide and "<td>genus</td><td>0.667</td><td>0.45</td>" in wide.replace("\n", "")
    assert "Coverage against accuracy" in wide
    narrow = page[page.index('id="model-narrow"') :]
    assert "<table" not in narrow[: narrow.index("Coverage against accuracy")].split("By rank")[1]
    assert "All classes are of genus &lt;script&gt;alert(1)&lt;/script&gt;" in narrow and hostile not in page
