"""The likely-label-error queue (fishid.review.label_issues, rule label_issues): on real photos
with labels flipped on purpose, on a small synthetic source with planted mislabelled photos,
and the rule's inputs.

The real photos are classify2-dev, read where they lie (../shared/data beside the checkout);
their listing, cleaning, flipping and scoring are bench/label_issues_real.py's, which measures
the same at full size."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from PIL import Image
from projectrun import DRY_RUN, make_project

from fishid.config import with_schema_defaults
from fishid.download import fetch
from fishid.models import registry
from fishid.review import label_issues
from fishid.sources import base as sources
from fishid.sources import synthetic
from fishid.tables import RECORD_COLUMNS, write_table

sys.path.insert(0, str(REPO / "bench"))
import label_issues_real as bench  # noqa: E402

CLASSIFY2 = Path(__file__).resolve().parents[2].parent / "shared/data/classify2-dev"
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())
# The per-fold network at a small size, so that five folds and the features' fit take seconds.
SMALL_NETWORK = {"image_size": 32, "epochs": 12, "step_size": 9, "channels": [16, 32, 64], "hidden": [128, 64]}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """As rule label_issues runs (threads: 1): on busy cores a second thread only waits."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def study_settings(network: dict | None = SMALL_NETWORK) -> dict:
    """rule label_issues' settings under the study's configuration without a backbone (ImageNet
    weights cannot be had offline), with `network` over the default network (None: as it is)."""
    config = yaml.safe_load(bench.STUDY.read_text())
    config["review"] = {"label_issues": {"backbone": "none", **({"network": network} if network else {})}}
    return label_issues.issue_settings(with_schema_defaults(config))


@pytest.fixture(scope="module")
def classify2(tmp_path_factory):
    if not CLASSIFY2.is_dir():
        pytest.fail(f"classify2-dev not found at {CLASSIFY2}: it lives in ../shared/data beside the checkout")
    root = tmp_path_factory.mktemp("classify2")
    return bench.cleaned(CLASSIFY2, root), root


def test_flipped_labels_of_real_photos_lead_the_queue_and_few_photos_are_flagged(classify2):
    """20 of 362 labels flipped (seeded). The colour model before (bench/results/label_issues.md)
    put 6 of them in its top 20 and flagged 30 % of the photos (precision 0.13)."""
    clean, root = classify2
    table, planted = bench.flipped(clean, 20, seed=0)
    ranked, summary = label_issues.label_issues(table, root / "derived", study_settings(network=None), seed=2018)
    found = bench.scores(ranked, planted)
    print(found, summary["cross_validated_accuracy"])
    assert found["recall_at_20"] >= 0.4
    assert found["flagged_share"] <= 0.1 and found["precision"] >= 0.5
    assert summary["flagged"] == found["flagged"] and summary["backbone"] == "none"


# --- a small synthetic source, listed, downloaded and cleaned as the rules do ------------------

SPECIES = ["Amphiprion clarkii", "Amphiprion perideraion", "Amphiprion ocellaris", "Amphiprion frenatus"]
PLANTED = 4


@pytest.fixture(scope="module")
def synthetic_project(tmp_path_factory):
    """Four species, 24 plain pictures each, with PLANTED mislabelled photos and two near
    duplicates (which cleaning drops by their perceptual hash)."""
    root = tmp_path_factory.mktemp("planted")
    spec = {
        "patterns": str(REPO / "config/synthetic_species.tsv"),
        "size": [96, 72],
        "counts": dict.fromkeys(SPECIES, 24),
        "defects": {"mislabelled": PLANTED, "near_duplicate": 2},
    }
    records, _ = sources.list_source("synthetic", spec, sources.Context("synthetic", seed=DEMO["seed"]))
    write_table(records, root / "records.tsv", RECORD_COLUMNS)
    fetch.run(root / "records.tsv", root / "downloads.tsv", root / "images", {"licences": DEMO["licences"]})
    return records, bench.clean_in_own_process(root, {**DEMO["clean"], "max_side": 96}), root


def planted_shas(records: pd.DataFrame, clean: pd.DataFrame) -> set[str]:
    ids = set(records.loc[records["record_id"].str.contains(":defect-mislabelled-"), "record_id"])
    return {sha for sha, rids in zip(clean["sha256"], clean["record_ids"]) if ids & set(str(rids).split(","))}


def test_mislabelled_photos_are_planted_kept_and_say_what_they_show(synthetic_project):
    records, clean, _ = synthetic_project
    mine = records[records["record_id"].str.contains(":defect-mislabelled-")]
    assert len(mine) == PLANTED
    for record in mine.to_dict("records"):
        pattern, params, _ = synthetic.decode_url(record["media_url"])
        assert params["defect"] == "mislabelled" and params["drawn_as"] == pattern["taxon"] != record["taxon"]
    planted = planted_shas(records, clean)
    assert len(planted) == PLANTED
    assert (clean.loc[clean["sha256"].isin(planted), "kept"] == "True").all()


def test_planted_mislabelled_photos_lead_the_queue(synthetic_project):
    """Every planted photo within the top 2 x planted, and under a tenth of the set flagged."""
    records, clean, root = synthetic_project
    settings = study_settings(network=None)
    ranked, summary = label_issues.label_issues(clean, root / "derived", settings, seed=DEMO["seed"])
    planted = planted_shas(records, clean)
    ranks = sorted(ranked.loc[ranked["sha256"].isin(planted), "rank"])
    print(ranks, summary)
    assert ranks[-1] <= 2 * PLANTED
    assert summary["flagged_share"] < 0.1


def check_table_and_summary(ranked: pd.DataFrame, summary: dict, clean: pd.DataFrame):
    """Every column filled, and the summary's counts are the table's."""
    assert list(ranked.columns) == label_issues.ISSUE_COLUMNS
    assert not ranked[["label_score", "outlier_score", "self_confidence"]].isna().any().any()
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert ranked["self_confidence"].is_monotonic_increasing
    assert np.allclose(ranked["label_score"], ranked["self_confidence"])
    assert summary["photos"] == len(ranked) == (clean["kept"] == "True").sum()
    assert summary["flagged"] == ranked["flagged"].sum() and summary["outliers"] == ranked["is_outlier"].sum()
    assert summary["label_issues"] == ranked["is_label_issue"].sum()
    assert ranked["flagged"].sum() <= ranked["is_label_issue"].sum()
    assert summary["flagged_share"] == round(ranked["flagged"].mean(), 4)
    clustered = ranked.loc[ranked["cluster"] >= 0, "cluster"]
    assert summary["clusters"]["count"] == clustered.nunique() and sum(summary["clusters"]["sizes"]) == len(clustered)
    assert summary["clusters"]["unclustered"] == (ranked["cluster"] < 0).sum()
    duplicates = summary["near_duplicates"]
    assert duplicates["photos"] == (ranked["near_duplicate_of"] != "").sum()
    # Cleaning dropped the two planted copies: each is a pair of the perceptual hash, found by Datalab or not.
    assert duplicates["phash_pairs"] == 2 == duplicates["both"] + duplicates["phash_only"]
    assert duplicates["datalab_pairs"] == duplicates["both"] + duplicates["datalab_only"]
    if duplicates["datalab_only"] + duplicates["phash_only"]:
        assert ranked["phash_disagrees"].any()


def test_the_network_path_fills_every_column_and_the_summary_counts_the_table(synthetic_project):
    _, clean, root = synthetic_project
    ranked, summary = label_issues.label_issues(clean, root / "derived", study_settings(), seed=1)
    check_table_and_summary(ranked, summary, clean)
    assert summary["backbone"] == "none" and summary["image_size"] == SMALL_NETWORK["image_size"]


def test_the_network_path_reads_the_photos_from_a_mapped_file_it_removes(synthetic_project, tmp_path, monkeypatch):
    """The networks read the photos from a file in the temporary folder, mapped (as training
    reads its cache), not from a copy held by the job: the same probabilities and features as
    from the images in memory, and no file left behind."""
    _, clean, root = synthetic_project
    kept = label_issues.labelled_photos(clean)
    paths = [root / "derived" / p for p in kept["derived_path"]]
    classes = sorted(set(kept["taxon"]))
    labels = np.array([classes.index(t) for t in kept["taxon"]])
    settings = study_settings({**SMALL_NETWORK, "epochs": 2, "step_size": 1})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    mapped = []
    held = label_issues.network_probabilities

    def seen(images, *args, **kwargs):
        mapped.append(sorted(p.name for p in scratch.glob("*/*")))
        return held(images, *args, **kwargs)

    monkeypatch.setattr(label_issues, "network_probabilities", seen)
    probabilities, features, _ = label_issues.model_outputs(settings, paths, None, labels, classes, 3, 1, None)
    assert mapped == [["photos.npy"]] and not any(scratch.iterdir())
    images = label_issues.load_images(paths, settings["image_size"])
    in_memory = held(images, labels, classes, 3, settings["network"], 1)
    assert np.array_equal(probabilities, in_memory[0]) and np.array_equal(features, in_memory[1])


def test_the_backbone_path_reads_the_weights_file(synthetic_project, tmp_path):
    """A ResNet-18 weights file as rule pretrain_backbone writes it (here untrained): its
    features, computed once, feed the cross-validated logistic regression."""
    _, clean, root = synthetic_project
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save({"model": registry.backbone_resnet18().state_dict()}, weights)
    config = {**DEMO, "review": {"label_issues": {"backbone": "pool", "crops": False}}}
    settings = label_issues.issue_settings(with_schema_defaults(config))
    assert settings["backbone"] == "pool" and settings["image_size"] == DEMO["backbones"]["pool"]["image_size"]
    assert "network" not in settings and not settings["crops"]
    ranked, summary = label_issues.label_issues(clean, root / "derived", settings, weights, seed=1)
    check_table_and_summary(ranked, summary, clean)
    assert summary["backbone"] == "pool" and summary["cropped"] == 0
    with pytest.raises(ValueError, match="its weights file is missing"):
        label_issues.label_issues(clean, root / "derived", settings, None)


def test_the_backbone_reads_many_photos_a_chunk_at_a_time(synthetic_project, tmp_path, monkeypatch):
    """Past CHUNK_BYTES of images the backbone reads the photos in chunks, twice: the channel
    statistics and the features are those of every photo read at once, to float precision."""
    _, clean, root = synthetic_project
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save({"model": registry.backbone_resnet18().state_dict()}, weights)
    paths = [root / "derived" / p for p in clean.loc[clean["derived_path"] != "", "derived_path"]][:40]
    whole = label_issues.backbone_features(paths, 32, weights)
    stats = label_issues.channel_stats(label_issues.load_images(paths, 32))
    monkeypatch.setattr(label_issues, "CHUNK_BYTES", 3 * 32 * 32 * 7)
    parts = label_issues.chunks(paths, 32)
    assert [len(part) for part in parts] == [7] * 5 + [5]
    for streamed, at_once in zip(label_issues.chunked_channel_stats(parts, 32), stats):
        assert torch.allclose(streamed, at_once, rtol=1e-5)
    assert np.allclose(label_issues.backbone_features(paths, 32, weights), whole, rtol=1e-3, atol=1e-5)


def test_with_a_detect_section_the_model_reads_each_photos_crop(synthetic_project, tmp_path):
    """The demo has a detect section: the queue reads the crops table's crop of each photo that
    has one (here three photos, cut in half), the whole photo of the others, and calibrates its
    probabilities by the crops' sizes (the summary has the temperatures)."""
    _, clean, root = synthetic_project
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save({"model": registry.backbone_resnet18().state_dict()}, weights)
    config = with_schema_defaults({**DEMO, "review": {"label_issues": {"backbone": "pool"}}})
    settings = label_issues.issue_settings(config)
    assert settings["crops"]
    assert not label_issues.issue_settings(with_schema_defaults({**DEMO, "detect": None, "review": {}}))["crops"]
    kept = label_issues.labelled_photos(clean).head(3)
    rows = []
    for sha, derived in zip(kept["sha256"], kept["derived_path"]):
        with Image.open(root / "derived" / derived) as photo:
            photo.crop((0, 0, photo.width // 2, photo.height)).save(tmp_path / f"{sha}.png")
            box = {"crop_x0": 0, "crop_y0": 0, "crop_x1": photo.width // 2, "crop_y1": photo.height}
        rows.append({"image": sha, "path": f"{sha}.png", **box})
    pd.DataFrame(rows).to_csv(tmp_path / "crops.tsv", sep="\t", index=False)
    crops = (tmp_path / "crops.tsv", tmp_path)
    ranked, summary = label_issues.label_issues(clean, root / "derived", settings, weights, seed=1, crops=crops)
    check_table_and_summary(ranked, summary, clean)
    assert summary["cropped"] == 3
    assert set(summary["calibration"]) == {
        "temperature_50px",
        "temperature_100px",
        "temperature_150px",
        "temperature_no_fish",
    }
    assert all(t > 0 for t in summary["calibration"].values())
    with pytest.raises(ValueError, match="crops table was not given"):
        label_issues.label_issues(clean, root / "derived", settings, weights, seed=1)


def test_size_calibration_sharpens_where_the_model_is_right_and_softens_where_it_is_not(tmp_path):
    """Large fish (150 px) predicted right 90 % of the time and small ones (40 px) 30 % of the
    time, with the same 0.6 confidence on every photo: the temperatures fitted by the log loss
    sharpen the large fish's probabilities and soften the small ones'; the predicted class
    stays; the crop sizes come from the crops table's boxes (NaN without one)."""
    rng = np.random.default_rng(0)
    n, k = 2000, 5
    sides = np.where(np.arange(n) < n // 2, 150.0, 40.0)
    predicted = rng.integers(0, k, n)
    right = rng.random(n) < np.where(sides > 100, 0.9, 0.3)
    labels = np.where(right, predicted, (predicted + rng.integers(1, k, n)) % k)
    probabilities = np.full((n, k), 0.1)
    probabilities[np.arange(n), predicted] = 0.6
    calibrated, temperatures = label_issues.size_calibrated(probabilities, labels, sides)
    assert (calibrated.argmax(axis=1) == predicted).all()
    np.testing.assert_allclose(calibrated.sum(axis=1), 1)
    large, small = calibrated[sides > 100].max(axis=1), calibrated[sides < 100].max(axis=1)
    assert large.min() > 0.85 and small.max() < 0.4
    assert temperatures["temperature_150px"] < 1 < temperatures["temperature_50px"]
    table = pd.DataFrame(
        {
            "image": ["a", "b"],
            "path": ["a.png", "b.png"],
            "crop_x0": [0, 10],
            "crop_y0": [0, 5],
            "crop_x1": [30, 90],
            "crop_y1": [40, 25],
        }
    )
    path = tmp_path / "crops.tsv"
    table.to_csv(path, sep="\t", index=False)
    sides = label_issues.crop_sides(pd.DataFrame({"sha256": ["b", "c", "a"]}), path)
    np.testing.assert_array_equal(sides, [80, np.nan, 40])


def test_with_a_network_too_the_queue_ranks_by_both_models_probabilities(synthetic_project, tmp_path):
    """`with_network`: the backbone's linear head and the per-fold network, their probabilities'
    normalised geometric mean; the features are the backbone's. Without a backbone the setting
    is dropped (it changes nothing there, so editing it reruns nothing)."""
    _, clean, root = synthetic_project
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save({"model": registry.backbone_resnet18().state_dict()}, weights)
    network = {**SMALL_NETWORK, "epochs": 2, "step_size": 1}
    review = {"backbone": "pool", "crops": False, "with_network": True, "network": network}
    settings = label_issues.issue_settings(with_schema_defaults({**DEMO, "review": {"label_issues": review}}))
    assert settings["with_network"] and settings["network"]["image_size"] == 32 and settings["image_size"] == 64
    alone = label_issues.issue_settings(
        with_schema_defaults({**DEMO, "review": {"label_issues": {**review, "with_network": False}}})
    )
    assert "network" not in alone and not alone["with_network"]
    assert "with_network" not in study_settings()
    kept = label_issues.labelled_photos(clean)
    paths = [root / "derived" / p for p in kept["derived_path"]]
    classes = sorted(set(kept["taxon"]))
    labels = np.array([classes.index(t) for t in kept["taxon"]])
    both, features, _ = label_issues.model_outputs(settings, paths, None, labels, classes, 3, 1, weights)
    linear, linear_features, _ = label_issues.model_outputs(alone, paths, None, labels, classes, 3, 1, weights)
    theirs = label_issues.network_outputs(settings["network"], 32, paths, None, labels, classes, 3, 1)[0]
    assert np.array_equal(features, linear_features)
    assert np.allclose(both, label_issues.geometric_mean(linear, theirs)) and np.allclose(both.sum(axis=1), 1)
    assert not np.allclose(both, linear) and not np.allclose(both, theirs)
    # Where the two agree nothing moves; a sure model outweighs an unsure one; a class one model
    # rules out stays unlikely (an average would give it 0.30).
    sure, unsure = np.array([[0.98, 0.01, 0.01]]), np.array([[0.4, 0.3, 0.3]])
    assert label_issues.geometric_mean(sure, sure) == pytest.approx(sure)
    assert label_issues.geometric_mean(sure, unsure)[0, 0] > (0.98 + 0.4) / 2
    ruled_out = label_issues.geometric_mean(np.array([[0.5, 0.499, 0.001]]), np.array([[0.2, 0.2, 0.6]]))
    assert ruled_out[0, 2] < 0.05
    ranked, summary = label_issues.label_issues(clean, root / "derived", settings, weights, seed=1)
    check_table_and_summary(ranked, summary, clean)
    assert summary["with_network"] and summary["backbone"] == "pool"


def test_the_backbone_setting_is_resolved_and_a_wrong_one_named():
    backbones = {"clip": {"source": "open_clip"}, "imagenet": {"source": "imagenet"}, "pool": {"source": "pretrain"}}
    assert label_issues.chosen_backbone("auto", backbones) == "imagenet"
    assert label_issues.chosen_backbone("auto", {"clip": backbones["clip"]}) == "none"
    assert label_issues.chosen_backbone("pool", backbones) == "pool"
    with pytest.raises(ValueError, match=r"review.label_issues.backbone: 'clip' is not a ResNet-18 backbone"):
        label_issues.chosen_backbone("clip", backbones)
    defaults = label_issues.issue_settings(with_schema_defaults({**DEMO, "review": {}}))
    assert defaults["backbone"] == "pool" and defaults["folds"] == 5 and defaults["flag_below"] == 0.1


# --- the rule ---------------------------------------------------------------------------------


def planned_label_issues(project: Path, *config: str) -> str:
    """What a dry run prints of rule label_issues' job (its inputs and shell command)."""
    from dryruns import snakemake_output

    arguments = ["--snakefile", str(project / "Snakefile"), "--directory", str(project), *DRY_RUN]
    out = snakemake_output([*arguments, "results/review/label_issues.tsv", "--printshellcmds", *config])
    return out[out.index("rule label_issues:") :]


def test_the_rule_reads_the_backbone_weights_and_declares_a_gpu(tmp_path):
    project = make_project(tmp_path / "project", config=None)
    job = planned_label_issues(project)
    assert "results/backbones/pool/weights.pt" in job.split("output:")[0]
    assert "--backbone results/backbones/pool/weights.pt" in job and "resources:" in job and "gpu=1" in job
    assert json.loads(job.split("--spec '", 1)[1].split("'", 1)[0])["backbone"] == "pool"
    without = planned_label_issues(project, "--config", "review={'label_issues': {'backbone': 'none'}}")
    assert "results/backbones" not in without.split("output:")[0] and "--backbone" not in without


def test_past_the_sample_clusters_agree_with_hdbscan_on_every_photo_and_leave_far_ones_out():
    from sklearn.metrics import adjusted_rand_score

    from fishid.review import label_issues

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 20
    blobs = np.concatenate([c + rng.normal(size=(200, 8)) for c in centres])
    far = rng.normal(size=(5, 8)) * 20 + 200
    features = np.concatenate([blobs, far])
    whole = label_issues.clusters(features, 10)
    sampled = label_issues.clusters(features, 10, sample=150)
    assert len(set(whole[:600])) == 3 and adjusted_rand_score(whole[:600], sampled[:600]) > 0.95
    assert (sampled[600:] == -1).all()


def test_past_the_exact_limit_datalab_reads_an_approximate_graph_that_finds_the_same_issues(monkeypatch):
    """NN-descent's graph (used past EXACT_NEIGHBOURS photos) against Datalab's own search over
    every pair, on the same features: nearly the same neighbours, and the same outliers and
    near duplicates."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32)) * 3
    features = np.concatenate([c + rng.normal(size=(250, 32)) for c in centres])
    copies = features[:20] + rng.normal(size=(20, 32)) * 1e-3
    features = np.concatenate([features, copies, rng.normal(size=(10, 32)) * 8]).astype(np.float32)
    n = len(features)
    assert set(label_issues.neighbours(features)) == {"features"}
    probabilities = rng.dirichlet(np.ones(3), size=n)
    given = [f"species {i % 3}" for i in range(n)]
    searched = label_issues.datalab_issues(probabilities, features, given)
    duplicates = label_issues.datalab_near_duplicates(features)

    monkeypatch.setattr(label_issues, "EXACT_NEIGHBOURS", n - 1)
    graph = label_issues.neighbours(features)["knn_graph"]
    found = graph.indices.reshape(n, label_issues.NEIGHBOURS)
    assert graph.shape == (n, n) and not (found == np.arange(n)[:, None]).any()
    assert (np.diff(graph.data.reshape(n, -1), axis=1) >= 0).all()
    exact = NearestNeighbors(n_neighbors=label_issues.NEIGHBOURS, metric="cosine").fit(features).kneighbors()[1]
    recall = np.mean([len(set(a) & set(b)) for a, b in zip(found, exact)]) / label_issues.NEIGHBOURS
    assert recall > 0.95, recall
    approximate = label_issues.datalab_issues(probabilities, features, given)
    outliers = set(np.flatnonzero(searched["is_outlier_issue"]))
    assert outliers >= set(range(n - 10, n)) and set(np.flatnonzero(approximate["is_outlier_issue"])) == outliers
    assert (searched["is_label_issue"] == approximate["is_label_issue"]).all()
    assert label_issues.datalab_near_duplicates(features) == duplicates
    assert all(1500 + i in duplicates[i] for i in range(20))


def test_confident_learning_forks_no_pool(monkeypatch):
    """cleanlab forks a pool per core unless told otherwise; a fork of a process with
    PyTorch's threads running can hang for good (it did in CI), so the queue asks for one."""
    import multiprocessing

    def refuse(*args, **kwargs):
        raise AssertionError("a multiprocessing pool was started")

    monkeypatch.setattr(multiprocessing, "Pool", refuse)
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=60)
    given = [f"species {i % 3}" for i in range(60)]
    issues = label_issues.datalab_issues(probabilities, rng.normal(size=(60, 8)), given)
    assert len(issues) == 60 and "label_score" in issues.columns
