"""`fishid audit` and the attribution list, on the tiny run's own tables."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO
from projectrun import run_config

from fishid.report.attribution import ATTRIBUTION_COLUMNS, attribution
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, write_table


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def fishid(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "workflow" / "fishid_cli.py"), *args], capture_output=True, text=True, timeout=120
    )


def tiny_config(project):
    return run_config(project)


def models_using(config, datasets, backbones=()):
    """The config's models trained on one of `datasets` or starting from one of `backbones`."""
    return sorted(
        name
        for name, model in config["models"].items()
        if model["dataset"] in datasets or model.get("backbone") in backbones
    )


def split_rows(project, sha256) -> set[tuple[str, str]]:
    """(dataset, split) of every row of every dataset's split table that holds the photo."""
    tables = [read(p) for p in (project / "results/splits").glob("*.tsv") if p.name.count(".") == 1]
    rows = pd.concat(tables)
    return set(map(tuple, rows.loc[rows["sha256"] == sha256, ["dataset", "split"]].values.tolist()))


def datasets_holding(project, sha256) -> set[str]:
    return {dataset for dataset, _ in split_rows(project, sha256)}


def backbones_on(config, datasets) -> list[str]:
    return sorted(name for name, b in config.get("backbones", {}).items() if b["dataset"] in datasets)


def audit_json(project, query):
    result = fishid("audit", query, "--root", str(project), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def record(record_id, taxon, **extra):
    return {
        "record_id": record_id,
        "source": "gbif",
        "taxon": taxon,
        "license": "CC-BY-4.0",
        "rights_holder": f"holder of {record_id}",
        "creator": "",
        "media_url": f"https://example.org/{record_id}.jpg",
        "page_url": "",
        "occurrence_id": record_id,
        "dataset_key": "d1",
        **extra,
    }


def test_attribution_lists_every_record_behind_every_used_image():
    records = pd.DataFrame([record("r1", "A a"), record("r2", "A a"), record("r3", "B b"), record("r4", "B b")])
    downloads = pd.DataFrame(
        {
            "record_id": ["r1", "r2", "r3", "r4"],
            # r1 and r2 are the same photo; r4 failed to download; r3's image is in no dataset.
            "sha256": ["s1", "s1", "s3", ""],
            "error": ["", "", "", "HTTP 404"],
        }
    )
    clean = pd.DataFrame({"sha256": ["s1", "s3"], "taxon": ["A a", "B b"]})
    splits = pd.DataFrame({"dataset": ["two", "four"], "sha256": ["s1", "s1"]})
    table = attribution(records, downloads, clean, splits)
    assert list(table.columns) == ATTRIBUTION_COLUMNS
    assert table[["sha256", "record_id", "datasets", "rights_holder"]].values.tolist() == [
        ["s1", "r1", "four;two", "holder of r1"],
        ["s1", "r2", "four;two", "holder of r2"],
    ]


def test_attribution_refuses_splits_that_no_record_explains():
    records = pd.DataFrame([record("r1", "A a")])
    downloads = pd.DataFrame({"record_id": ["r1"], "sha256": ["s1"], "error": [""]})
    clean = pd.DataFrame({"sha256": ["s1", "s9"], "taxon": ["A a", "A a"]})
    splits = pd.DataFrame({"dataset": ["two", "two"], "sha256": ["s1", "s9"]})
    with pytest.raises(ValueError, match="1 image.*no source record.*s9"):
        attribution(records, downloads, clean, splits)


def test_the_runs_attribution_csv_credits_every_image_of_every_dataset(tiny_project):
    table = pd.read_csv(tiny_project / "results/provenance/attribution.csv", dtype=str, keep_default_na=False)
    used = pd.concat(read(p) for p in (tiny_project / "results/splits").glob("*.tsv") if p.name.count(".") == 1)
    assert set(table["sha256"]) == set(used["sha256"])
    records = read(tiny_project / "resources/records/synthetic.tsv").set_index("record_id")
    for row in table.itertuples():
        assert records.loc[row.record_id, "license"] == row.license == "CC0-1.0"
        assert set(row.datasets.split(";")) == set(used.loc[used["sha256"] == row.sha256, "dataset"])


def test_audit_of_an_image_follows_it_from_record_to_predictions(tiny_project):
    pair = read(tiny_project / "results/splits/pair.tsv")
    image = pair[pair["split"] == "val"].iloc[0]
    chain = audit_json(tiny_project, image["sha256"][:12])
    assert chain["kind"] == "image" and chain["sha256"] == image["sha256"]
    downloads = read(tiny_project / "resources/downloads/synthetic.tsv")
    record_ids = set(downloads.loc[downloads["sha256"] == image["sha256"], "record_id"])
    assert {r["record_id"] for r in chain["records"]} == record_ids
    assert all(r["license"] == "CC0-1.0" and r["media_url"].startswith("synthetic:") for r in chain["records"])
    assert chain["clean"]["kept"] == "True"
    assert {"dataset": "pair", "label": image["label"], "split": "val"} in chain["splits"]
    # Exactly the models trained on a dataset that holds the photo, or on a backbone pre-trained
    # on one. Every photo of pair is in trio_other too (the same two species, a larger cap), so
    # trio_other's models (its random-backbone control among them) saw it as well.
    config = run_config(tiny_project)
    held_by = datasets_holding(tiny_project, image["sha256"])
    assert {"pair", "trio_other"} <= held_by
    assert {(s["dataset"], s["split"]) for s in chain["splits"]} == split_rows(tiny_project, image["sha256"])
    assert sorted(m["name"] for m in chain["models"]) == models_using(config, held_by, backbones_on(config, held_by))
    # One of A. ocellaris is in trio_other only, so only trio_other's models (the pair's and
    # pool's never saw it).
    trio = read(tiny_project / "results/splits/trio_other.tsv")
    only_trio = trio.loc[trio["label"] == "Amphiprion ocellaris", "sha256"].iloc[0]
    ocellaris = audit_json(tiny_project, only_trio)
    assert datasets_holding(tiny_project, only_trio) == {s["dataset"] for s in ocellaris["splits"]} == {"trio_other"}
    trio_models = {name for name, spec in config["models"].items() if spec["dataset"] == "trio_other"}
    assert {m["name"] for m in ocellaris["models"]} == trio_models
    ri2 = read(tiny_project / "results/models/RI2/predictions.tsv")
    expected = ri2.loc[ri2["sha256"] == image["sha256"], "predicted"].item()
    assert {"model": "RI2", "split": "val", "label": image["label"], "predicted": expected} in chain["predictions"]

    text = fishid("audit", image["sha256"], "--root", str(tiny_project))
    assert text.returncode == 0, text.stderr
    for part in [*record_ids, "licence:     CC0-1.0", "rights holder: fishid contributors", "cleaning: kept"]:
        assert part in text.stdout
    assert f"pair: val as '{image['label']}'" in text.stdout
    assert f"RI2 on val: '{expected}'" in text.stdout


def test_audit_of_an_image_shows_its_crop_or_why_it_has_none(tiny_project):
    """The detect stage's provenance: the crop of a photo (its box, score, margin, detector and
    file), and, for a photo without a fish, its place in the queue with the reason."""
    crops = read(tiny_project / "results/detect/crops.tsv")
    queue = read(tiny_project / "results/detect/no_fish.tsv")
    kept = read(tiny_project / "results/clean/images.tsv").query("kept == 'True'")
    # Every kept photo is either cropped or queued, never both, never neither.
    assert sorted([*crops["image"], *queue["image"]]) == sorted(kept["sha256"])
    crop = crops.iloc[0]
    chain = audit_json(tiny_project, crop["image"])
    assert chain["crop"] == crop.to_dict() and chain["no_fish"] is None
    assert (tiny_project / "results/detect/crops" / crop["path"]).is_file()
    text = fishid("audit", crop["image"], "--root", str(tiny_project)).stdout
    assert f"cropped to results/detect/crops/{crop['path']} by detector synthetic: box ({crop['x0']}, " in text
    assert f"score {crop['score']}, padding {crop['padding']}" in text
    # A photo the detector found nothing in: the tiny run's may find a fish in all of them, so
    # one is queued by hand, as the stage writes it.
    image = kept["sha256"].iloc[-1]
    unfound = {"image": image, "reason": "no_fish_found", "detector": "synthetic", "best_score": "0.01"}
    queue_path = tiny_project / "results/detect/no_fish.tsv"
    original = queue_path.read_bytes()
    try:
        write_table(pd.DataFrame([{**unfound, "threshold": "0.05"}]), queue_path)
        crops_path = tiny_project / "results/detect/crops.tsv"
        kept_crops = crops_path.read_bytes()
        write_table(crops[crops["image"] != image], crops_path)
        try:
            chain = audit_json(tiny_project, image)
            assert chain["crop"] is None and chain["no_fish"] == {**unfound, "threshold": "0.05"}
            text = fishid("audit", image, "--root", str(tiny_project)).stdout
            assert "detection: NO FISH FOUND by detector synthetic (best score 0.01, threshold 0.05; " in text
            assert "reason no_fish_found): in the queue results/detect/no_fish.tsv" in text
        finally:
            crops_path.write_bytes(kept_crops)
    finally:
        queue_path.write_bytes(original)


def test_audit_of_a_backbone_image_names_the_models_built_on_that_backbone(tiny_project):
    config = tiny_config(tiny_project)
    pool = read(tiny_project / "results/splits/pool.tsv")
    chain = audit_json(tiny_project, pool["sha256"].iloc[0])
    backbones = sorted(name for name, b in config["backbones"].items() if b["dataset"] == "pool")
    assert "pool" in backbones
    assert chain["backbones"] == [{"name": name, "dataset": "pool"} for name in backbones]
    # Models that start from those backbones used the image; a random-backbone control and
    # RI2 (random initialisation) never saw it.
    models = [m["name"] for m in chain["models"]]
    assert models == models_using(config, ["pool"], backbones)
    assert "TL3o" in models and "TL3o-random" not in models and "RI2" not in models


def test_audit_of_a_capped_image_says_why_it_was_left_out(tiny_project):
    decisions = read(tiny_project / "results/splits/pair.decisions.tsv")
    capped = decisions[decisions["decision"] == "capped"].iloc[0]
    chain = audit_json(tiny_project, capped["sha256"])
    assert {"dataset": "pair", "decision": "capped", "reason": capped["reason"]} in chain["left_out"]
    assert "pair" not in {s["dataset"] for s in chain["splits"]}


def test_audit_of_a_species_sums_up_its_chain_and_matches_the_metrics(tiny_project):
    chain = audit_json(tiny_project, "amphiprion clarkii")
    assert chain["kind"] == "species" and chain["taxon"] == "Amphiprion clarkii"
    assert chain["records_by_source_and_license"] == {"synthetic / CC0-1.0": 24}
    clean = read(tiny_project / "results/clean/images.tsv")
    clarkii = clean[clean["taxon"] == "Amphiprion clarkii"]
    assert chain["downloaded"] == 24 and chain["kept"] == (clarkii["kept"] == "True").sum() > 0
    config = tiny_config(tiny_project)
    with_clarkii = [name for name, d in config["datasets"].items() if "Amphiprion clarkii" in d["species"]]
    assert chain["models"] == models_using(config, with_clarkii)
    metrics = json.loads((tiny_project / "results/models/RI2/metrics.json").read_text())
    species = metrics["per_species"]["Amphiprion clarkii"]
    assert chain["accuracy"]["RI2"] == {"split": "val", "n": species["n"], "correct": species["correct"]}


def test_audit_of_a_model_lists_its_data_licences_and_mistakes(tiny_project):
    chain = audit_json(tiny_project, "TL3o")
    assert chain["kind"] == "model" and chain["dataset"] == "trio_other"
    assert chain["backbone"] == {"name": "pool", "dataset": "pool"}
    trio = read(tiny_project / "results/splits/trio_other.tsv")
    assert chain["training_images"] == (trio["split"] == "train").sum()
    predictions = read(tiny_project / "results/models/TL3o/predictions.tsv")
    assert chain["predictions"] == len(predictions)
    assert len(chain["mistakes"]) == (predictions["label"] != predictions["predicted"]).sum()
    assert chain["rights_holders"] == ["fishid contributors"]


def test_audit_of_an_unknown_name_says_what_it_accepts(tiny_project):
    result = fishid("audit", "Nemo", "--root", str(tiny_project))
    assert result.returncode == 1
    known = ", ".join(sorted(tiny_config(tiny_project)["models"]))
    assert f"'Nemo' is not an image hash, a model (known: {known}) or a species" in result.stderr


def dirty_copy(tiny_project, root):
    """The tiny run's tables with what real sources bring: a photo listed twice (a GBIF record
    under another licence beside the synthetic one), a record refused for its licence, an
    image dropped as a near duplicate, and a hash sharing a kept image's first 8 characters."""
    shutil.copytree(tiny_project / "resources/records", root / "resources/records")
    shutil.copytree(tiny_project / "resources/downloads", root / "resources/downloads")
    shutil.copytree(tiny_project / "results", root / "results", ignore=shutil.ignore_patterns("*.pt", "*.npz", "*.png"))
    pair = read(root / "results/splits/pair.tsv")
    kept = pair[pair["split"] == "val"].iloc[0]
    clean = read(root / "results/clean/images.tsv")
    others = clean[(clean["taxon"] == kept.taxon) & (clean["sha256"] != kept.sha256)]
    dropped = others["sha256"].iloc[0]
    clean.loc[clean["sha256"] == dropped, ["kept", "reason", "duplicate_of"]] = ["False", "near duplicate", kept.sha256]
    write_table(clean, root / "results/clean/images.tsv")
    records = pd.DataFrame(
        [
            record("gbif:77-1", kept.taxon, license="CC-BY-NC-4.0", rights_holder="Ann Diver"),
            record("gbif:78-1", kept.taxon, license="CC-BY-ND-4.0", rights_holder="Ben Diver"),
            record("gbif:79-1", kept.taxon, license="CC0-1.0"),
        ]
    ).reindex(columns=RECORD_COLUMNS, fill_value="")
    write_table(records, root / "resources/records/gbif.tsv")
    near_twin = kept.sha256[:8] + ("0" if kept.sha256[8] != "0" else "1") * 56
    downloads = pd.DataFrame(
        [
            {"record_id": "gbif:77-1", "sha256": kept.sha256, "path": "x/77.jpg", "bytes": "1234"}
            | {"content_type": "image/jpeg", "http_status": "200", "retrieved_at": "2026-12-01T10:00:00Z"},
            {"record_id": "gbif:78-1", "error": "licence not allowed: CC-BY-ND-4.0"},
            {"record_id": "gbif:79-1", "sha256": near_twin, "path": "x/79.jpg", "bytes": "99"},
        ]
    ).reindex(columns=DOWNLOAD_COLUMNS, fill_value="")
    write_table(downloads, root / "resources/downloads/gbif.tsv")
    return kept, dropped, near_twin


def test_audit_of_dirty_data_shows_every_record_the_download_and_why_an_image_was_dropped(tiny_project, tmp_path):
    kept, dropped, near_twin = dirty_copy(tiny_project, tmp_path)
    chain = audit_json(tmp_path, kept.sha256[:9])  # a prefix one character past the shared eight
    assert chain["sha256"] == kept.sha256
    licences = {r["record_id"]: r["license"] for r in chain["records"]}
    assert licences["gbif:77-1"] == "CC-BY-NC-4.0" and len(licences) >= 2
    assert {"synthetic", "gbif"} == {r["source"] for r in chain["records"]}
    text = fishid("audit", kept.sha256, "--root", str(tmp_path)).stdout
    assert "licence:     CC-BY-NC-4.0   rights holder: Ann Diver" in text
    assert "gbif:77-1 -> resources/images/x/77.jpg (1234 bytes, image/jpeg, HTTP 200, 2026-12-01T10:00:00Z)" in text

    ambiguous = fishid("audit", kept.sha256[:8], "--root", str(tmp_path))
    assert ambiguous.returncode == 1 and f"'{kept.sha256[:8]}' is the start of 2 image hashes" in ambiguous.stderr

    text = fishid("audit", dropped, "--root", str(tmp_path)).stdout
    assert f"cleaning: DROPPED (near duplicate, duplicate of {kept.sha256})" in text

    species = audit_json(tmp_path, kept.taxon)
    assert species["records_by_source_and_license"]["gbif / CC-BY-ND-4.0"] == 1
    assert species["download_failed"] == 1 and species["dropped_by_reason"] == {"near duplicate": 1}
    assert {"Ann Diver", "Ben Diver"} <= set(species["rights_holders"])
