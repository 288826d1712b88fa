"""The whole DAG through Snakemake on tests/config/tiny.yaml, then its outputs' contents."""

import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from conftest import REPO
from projectrun import run_config, snakemake
from reportcheck import FIGURES_PER_MODEL, check_report, render_in_chromium, table_row
from scipy.spatial.distance import pdist

# Training runs on what the machine has (CUDA_VISIBLE_DEVICES is passed through).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def tiny_run(tiny_project):
    return tiny_project, run_config(tiny_project)


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_every_job_ran_in_the_resident_worker_which_ended_with_the_run(tiny_run):
    """The local profile starts one resident worker (workflow/fishid_worker.py): every job of the
    project's first run (its Snakemake log's shell commands) ran in a child of it and succeeded,
    and the worker is gone once Snakemake has finished."""
    workdir, _ = tiny_run
    first_run = sorted((workdir / ".snakemake/log").glob("*.snakemake.log"))[0].read_text()
    # Rule `all` has none ("Shell command: None").
    commands = [shlex.split(c) for c in re.findall(r"^Shell command: (.*)$", first_run, re.MULTILINE) if c != "None"]
    # `python workflow/fishid_step.py STEP ... 2> log`: the step's arguments are the worker's.
    jobs = [command[2 : command.index("2>")] for command in commands]
    assert len(jobs) > 20 and all(command[:2] == ["python", "workflow/fishid_step.py"] for command in commands)
    logged = [json.loads(line) for line in (workdir / ".snakemake/log/fishid-worker.log").read_text().splitlines()]
    ran = [line for line in logged if "argv" in line]
    assert [line["preloaded"] for line in logged if "preloaded" in line], "the worker logs when its imports are done"
    for job in jobs:
        assert {"argv": job, "status": 0} in [{"argv": r["argv"], "status": r["status"]} for r in ran], job
    assert "not reachable" not in "".join(log.read_text() for log in workdir.glob("logs/**/*.log"))
    worker = str(workdir / "workflow" / "fishid_worker.py")
    assert not [p for p in psutil.process_iter(["cmdline"]) if worker in (p.info["cmdline"] or [])]


def test_records_downloads_and_cleaning_agree(tiny_run):
    workdir, config = tiny_run
    records = read(workdir / "resources/records/synthetic.tsv")
    assert records.groupby("taxon").size().to_dict() == config["sources"]["synthetic"]["counts"]
    assert (records["license"] == "CC0-1.0").all() and records["record_id"].is_unique
    downloads = read(workdir / "resources/downloads/synthetic.tsv")
    assert list(downloads["record_id"]) == list(records["record_id"]) and (downloads["error"] == "").all()
    for row in downloads.itertuples():
        assert (workdir / "resources/images" / row.path).stat().st_size == int(row.bytes)
    clean = read(workdir / "results/clean/images.tsv")
    assert set(clean["sha256"]) == set(downloads["sha256"])
    assert (clean["kept"] == "True").all()


def test_splits_follow_the_study_rule(tiny_run):
    workdir, _ = tiny_run
    pair = read(workdir / "results/splits/pair.tsv")
    counts = pair.groupby(["label", "split"]).size().to_dict()
    # 25 % validation, then training capped at 1 x the smallest species (16 - 4 = 12).
    assert counts == {
        ("Amphiprion clarkii", "train"): 12,
        ("Amphiprion clarkii", "val"): 6,
        ("Amphiprion perideraion", "train"): 12,
        ("Amphiprion perideraion", "val"): 4,
    }
    decisions = read(workdir / "results/splits/pair.decisions.tsv")
    assert (decisions["decision"] == "capped").sum() == 6
    trio = read(workdir / "results/splits/trio_other.tsv")
    assert set(trio["split"]) == {"train", "val", "test"}
    # other.size 12, drawn from both of its species.
    others = trio.loc[trio["label"] == "other", "taxon"]
    assert len(others) == 12 and set(others) == {"Amphiprion polymnus", "Amphiprion sandaracinos"}


def test_every_model_is_trained_and_evaluated(tiny_run):
    workdir, config = tiny_run
    for name, model in config["models"].items():
        folder = workdir / "results/models" / name
        history = pd.read_csv(folder / "history.csv")
        # A zero-shot model is not trained: its history is one evaluation (epoch 0).
        epochs = 1 if model["arch"] == "clip_zeroshot" else config["training_defaults"]["epochs"]
        assert len(history) == epochs
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["settings"]["arch"] == model["arch"] and meta["device"] == DEVICE
        weights = torch.load(folder / "weights.pt", weights_only=True)
        assert weights["classes"] == meta["classes"]
        metrics = json.loads((folder / "metrics.json").read_text())
        predictions = read(folder / "predictions.tsv")
        evaluated = predictions[predictions["split"] == metrics["evaluated_on"]]
        assert metrics["n"] == len(evaluated)
        assert metrics["correct"] == (evaluated["label"] == evaluated["predicted"]).sum()
        assert sum(map(sum, metrics["confusion"])) == metrics["n"]
    # Embedding models add same/different decisions over the study's distance thresholds and KNN.
    for name in ("Siamese2", "Triplet2"):
        check_pair_decisions(workdir / "results/models" / name)
    # A dataset with a test split reports test numbers.
    assert json.loads((workdir / "results/models/TL3o/metrics.json").read_text())["evaluated_on"] == "test"
    # The threshold model knows only the species; below its threshold it says "other".
    threshold = json.loads((workdir / "results/models/TL3o-threshold/meta.json").read_text())["open_set_threshold"]
    predictions = read(workdir / "results/models/TL3o-threshold/predictions.tsv")
    assert "score:other" not in predictions and threshold["label"] == "other"
    top = predictions[[c for c in predictions if c.startswith("score:")]].astype(float).max(axis=1)
    clear = (top - threshold["threshold"]).abs() > 1e-6  # scores are written to 6 decimals
    assert ((predictions["predicted"] == "other") == (top < threshold["threshold"]))[clear].all()


def check_pair_decisions(folder):
    """The same/different table of an embedding model, recomputed from the embeddings it saved
    (scipy's pdist over every pair once, not the code under test)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    saved = np.load(folder / "figure_data.npz")
    distance, labels = pdist(saved["features"].astype(float)), saved["labels"]
    same = pdist(np.unique(labels, return_inverse=True)[1][:, None], metric="cityblock") == 0
    pairs = metrics["embedding"]["pairs"]
    assert [row["threshold"] for row in pairs] == [round(0.3 + 0.1 * i, 1) for i in range(27)]
    for row in pairs:
        says_same = distance < row["threshold"]
        assert row["accuracy"] == pytest.approx((says_same == same).mean(), abs=1e-9), row
        assert row["same_accuracy"] == pytest.approx(says_same[same].mean(), abs=1e-9), row
        assert row["different_accuracy"] == pytest.approx((~says_same[~same]).mean(), abs=1e-9), row
    # A threshold no pair is under calls every pair different: the share of different pairs.
    assert pairs[0]["accuracy"] < 1 or same.sum() == 0
    # The KNN accuracy counts whole images.
    assert (metrics["embedding"]["knn_accuracy"] * metrics["n"]) == pytest.approx(
        round(metrics["embedding"]["knn_accuracy"] * metrics["n"])
    )


def test_a_model_that_cannot_learn_is_flagged_in_its_metrics_and_the_report(tiny_run):
    workdir, config = tiny_run
    assert config["models"]["RI2-lr0"]["lr"] == 0
    flags = json.loads((workdir / "results/models/RI2-lr0/metrics.json").read_text())["learned_nothing"]
    assert flags and all("predicts" in f or "majority baseline" in f for f in flags), flags
    page = (workdir / "results/report/index.html").read_text()
    row = table_row(page, "RI2-lr0")
    assert "<td>RI2-lr0 ⚠</td>" in page and flags[0] in html.unescape(row)
    log = (workdir / "logs/train_model/RI2-lr0.log").read_text()
    assert "training accuracy has been the majority class's share (0.500) for 2 epochs" in log
    assert json.loads((workdir / "results/models/RI2-lr0/meta.json").read_text())["left_majority_epoch"] is None


def test_the_embedding_map_of_a_metric_learning_model_is_of_its_learned_embedding(tiny_run):
    workdir, _ = tiny_run
    for name in ("Siamese2", "Triplet2"):
        features = np.load(workdir / "results/models" / name / "figure_data.npz")["features"]
        meta = json.loads((workdir / "results/models" / name / "meta.json").read_text())
        # Unit vectors of the embedding's size, not the projector's hidden layer.
        assert features.shape[1] == meta["settings"]["embedding_dim"], name
        assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-4), name


def test_report_is_self_contained_and_shows_every_model_and_figure(tiny_run):
    workdir, config = tiny_run
    page = check_report(workdir, config)
    assert "tiny pre-trained backbone for the test" in page
    assert "TL3o-random: " in page


def test_offline_without_cached_imagenet_weights_stops_with_the_place_to_put_them(tiny_run):
    workdir, _ = tiny_run
    result = snakemake(workdir, "resources/weights/resnet18-f37072fd.pth", "--cores", "1")
    assert result.returncode != 0
    log = (workdir / "logs/imagenet_weights/resources/weights.log").read_text()
    assert "place it at resources/weights/resnet18-f37072fd.pth" in log


def test_report_renders_in_headless_chromium(tiny_run):
    workdir, config = tiny_run
    sizes = render_in_chromium(workdir / "results/report/index.html", workdir / "results/report/screenshot.png")
    # Every model's figures and the detect stage's sheet of crops.
    assert len(sizes) == FIGURES_PER_MODEL * len(config["models"]) + ("detect" in config)


def test_predict_labels_a_folder_and_lists_unreadable_files(tiny_run, tmp_path):
    workdir, _ = tiny_run
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    split = read(workdir / "results/splits/pair.tsv")
    val = split[split["split"] == "val"].head(3)
    for row in val.itertuples():
        shutil.copy(workdir / "results/clean/derived" / row.derived_path, photos / f"{row.sha256}.jpg")
    (photos / "more" / "error-page.jpg").write_text("<html>Not found</html>")
    jpeg = next(photos.glob("*.jpg")).read_bytes()
    (photos / "more" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (photos / "more" / os.fsdecode(b"bad\xff.jpg")).write_bytes(jpeg)  # a name that is not UTF-8
    out = tmp_path / "labels.csv"
    command = [sys.executable, str(REPO / "workflow/fishid_cli.py"), "predict", "--model", "RI2", str(photos)]
    result = subprocess.run([*command, "--results", str(workdir / "results"), "--out", str(out)], capture_output=True)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, keep_default_na=False).set_index("file")
    assert len(table) == 6
    assert table.loc["more/bad\\xff.jpg", "error"] == "" and table.loc["more/bad\\xff.jpg", "predicted"] != ""
    labelled = table.loc[[f"{sha}.jpg" for sha in val["sha256"]]]
    assert (labelled["error"] == "").all()
    assert set(labelled["predicted"]) <= {"Amphiprion clarkii", "Amphiprion perideraion"}
    scores = labelled[["score:Amphiprion clarkii", "score:Amphiprion perideraion"]].astype(float)
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert table.loc["more/error-page.jpg", "error"].startswith("unreadable:")
    assert table.loc["more/cut.jpg", "error"].startswith("unreadable:")
    assert table.loc["more/cut.jpg", "predicted"] == ""


def raw_photos(workdir, dataset, role, dest):
    """The stored photos (as downloaded, before cleaning) of one split role, named by SHA-256."""
    dest.mkdir(parents=True)
    split = read(workdir / f"results/splits/{dataset}.tsv")
    downloads = pd.concat(read(p) for p in (workdir / "resources/downloads").glob("*.tsv"))
    stored = dict(zip(downloads["sha256"], downloads["path"]))
    for sha in split.loc[split["split"] == role, "sha256"]:
        shutil.copy(workdir / "resources/images" / stored[sha], dest / f"{sha}.jpg")
    return dest


@pytest.mark.parametrize("model", ["TL3o", "TL3o-threshold", "Siamese2", "RI2", "RI2-crop"])
def test_predict_gives_a_photo_what_evaluate_gave_it(tiny_run, tmp_path, model):
    """`fishid predict` on the raw photos of the split a model was evaluated on: the same
    labels and scores as its predictions.tsv (closed set, open-set threshold, embedding)."""
    workdir, config = tiny_run
    role = json.loads((workdir / f"results/models/{model}/metrics.json").read_text())["evaluated_on"]
    photos = raw_photos(workdir, config["models"][model]["dataset"], role, tmp_path / "photos")
    out = tmp_path / "labels.csv"
    command = [sys.executable, str(REPO / "workflow/fishid_cli.py"), "predict", "--model", model, str(photos)]
    result = subprocess.run([*command, "--results", str(workdir / "results"), "--out", str(out)], capture_output=True)
    assert result.returncode == 0, result.stderr
    labels = pd.read_csv(out, keep_default_na=False)
    labels.index = labels["file"].str.removesuffix(".jpg")
    evaluated = read(workdir / f"results/models/{model}/predictions.tsv").set_index("sha256")
    evaluated = evaluated[evaluated["split"] == role]
    assert sorted(labels.index) == sorted(evaluated.index) and (labels["error"] == "").all()
    labels = labels.loc[evaluated.index]
    assert labels["predicted"].tolist() == evaluated["predicted"].tolist()
    score_columns = [c for c in evaluated if c.startswith("score:")]
    difference = (labels[score_columns].astype(float) - evaluated[score_columns].astype(float)).abs()
    assert difference.to_numpy().max() < 1e-5


def test_predict_says_the_models_own_label_below_its_threshold(tiny_run, tmp_path):
    from fishid.evaluate import predict

    workdir, _ = tiny_run
    model_dir = tmp_path / "TL3o"
    shutil.copytree(workdir / "results/models/TL3o", model_dir)
    photos = raw_photos(workdir, "trio_other", "val", tmp_path / "photos")
    top = predict.predict_folder(model_dir, photos)["top_score"]
    threshold = float(top.median())
    weights = torch.load(model_dir / "weights.pt", weights_only=True)
    torch.save({**weights, "threshold": threshold, "threshold_label": "not a clownfish"}, model_dir / "weights.pt")
    table = predict.predict_folder(model_dir, photos)
    below = table["top_score"] < threshold
    assert below.any() and (~below).any()
    assert (table.loc[below, "predicted"] == "not a clownfish").all()
    assert not (table.loc[~below, "predicted"] == "not a clownfish").any()


def test_the_best_validation_epoch_is_shown_apart_and_marked_optimistic(tiny_run):
    workdir, config = tiny_run
    page = (workdir / "results/report/index.html").read_text()
    assert "best val epoch (optimistic)" in page
    shown = 0
    for name in config["models"]:
        row = table_row(page, name)
        history = pd.read_csv(workdir / "results/models" / name / "history.csv")
        best = history.loc[history["val_acc"].idxmax()]
        cell = f"{best['val_acc']:.3f} (epoch {int(best['epoch'])})"
        evaluated_on = json.loads((workdir / "results/models" / name / "metrics.json").read_text())["evaluated_on"]
        # Only where the reported numbers are validation's: a test split needs no such caveat.
        assert (cell in row) == (evaluated_on == "val"), (name, cell, row)
        shown += evaluated_on == "val"
    assert shown


def test_the_predict_folder_rule_writes_what_fishid_predict_writes(tiny_run, tmp_path):
    workdir, _ = tiny_run
    photos = raw_photos(workdir, "pair", "val", tmp_path / "photos")
    target = "results/predictions/RI2.csv"
    missing = snakemake(workdir, target, "--cores", "1")
    assert missing.returncode != 0 and "set predict_folder (a folder of photos)" in missing.stderr
    result = snakemake(workdir, target, "--cores", "1", "--config", f"predict_folder={photos}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "labels.csv"
    command = [sys.executable, str(REPO / "workflow/fishid_cli.py"), "predict", "--model", "RI2", str(photos)]
    subprocess.run([*command, "--results", str(workdir / "results"), "--out", str(out)], check=True)
    assert (workdir / target).read_text() == out.read_text()
    (workdir / target).unlink()
