"""After a complete run, Snakemake plans exactly the jobs a change touches, and no others.

Each test changes one thing in the session's tiny project (a copy of the checkout, so the
training code can be edited), prints the planned jobs (`pytest -n 0 -s` shows them) and puts
the project back exactly as it was (content and modification time).
"""

import hashlib
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dryruns import edited
from projectrun import (
    RUN_CONFIG,
    downstream,
    dry_run,
    job_files,
    planned,
    planned_jobs,
    plans_after_edits,
    run_config,
    snakemake,
)

from fishid import codedeps, layout
from fishid.config import kind_of, model_settings, with_schema_defaults
from fishid.detect import scope as detect_scope
from fishid.review import plan as review_plan
from fishid.tables import read_table

# The step (fishid.steps) each rule of the tiny run's DAG runs (its step_shell).
RULE_STEPS = {
    "list_source": "list",
    "fetch_images": "fetch",
    "fetch_shard": "fetch",
    "clean_images": "clean",
    "clean_shard": "clean-shard",
    "split_dataset": "split",
    "cache_images": "cache",
    "cache_crops": "cache",
    "train_detector": "train-detector",
    "detect_fish": "detect",
    "pretrain_backbone": "pretrain",
    "train_model": "train",
    "evaluate_model": "evaluate",
    "plot_dataset": "plot-dataset",
    "report": "report",
    "attribution": "attribution",
    "citation": "citation",
    "label_issues": "label-issues",
}


def rule_of(job: str) -> str:
    return job.split("[", 1)[0]


def config_of(project):
    return run_config(project)


@pytest.fixture(scope="module")
def job_graphs(tiny_project) -> dict:
    """Every job of the tiny DAG with its files, twice. Cleaning is a checkpoint: while it is
    to run, a plan shows the inputs of the jobs that wait for it as to be determined (<TBD>),
    read here as cleaning's outputs (Snakemake plans them all, the most a run could do). Once
    it has run, their inputs are known: cleaning and what comes before it are planned with
    --until, what follows with each later rule forced."""
    forceall = job_files(dry_run(tiny_project, "--forceall"))
    cleaning = forceall["clean_images"][1]
    waiting = {job: ((i - {"<TBD>"}) | (cleaning if "<TBD>" in i else set()), o) for job, (i, o) in forceall.items()}
    upstream = job_files(dry_run(tiny_project, "--forceall", "--until", "clean_images"))
    later = {rule_of(job) for job in forceall} - set(map(rule_of, upstream))
    cleaned = {**upstream, **job_files(dry_run(tiny_project, "--forcerun", *sorted(later)))}
    return {"cleaning": waiting, "cleaned": cleaned, "upstream": set(map(rule_of, upstream))}


def expected_plan(graphs: dict, rules) -> set[str]:
    """What a dry run plans when `rules` must rerun: what follows them, through the cleaning
    checkpoint's placeholders when cleaning is among them or after them."""
    return downstream(graphs["cleaning"] if set(rules) & graphs["upstream"] else graphs["cleaned"], rules)


def test_nothing_changed_plans_nothing(tiny_project):
    assert planned_jobs(tiny_project) == {}


def test_a_moved_project_plans_nothing(tiny_project, tmp_path):
    """A user moves the project folder (`mv`, or `cp -a`, which keeps modification times):
    nothing is out of date, so nothing reruns."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_project, moved, symlinks=True)  # copy2: modification times kept
    assert planned_jobs(moved) == {}


def test_one_models_learning_rate_reruns_that_model_and_the_report(tiny_project):
    config = config_of(tiny_project)
    config["models"]["RI2"]["lr"] = 0.002
    counts, jobs = planned(tiny_project, config)
    assert counts == {"train_model": 1, "evaluate_model": 1, "report": 1, "all": 1}
    assert jobs == {"train_model[model=RI2]", "evaluate_model[model=RI2]", "report", "all"}


def files_of(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder`: its modification time and the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.rglob("*")
        if p.is_file()
    }


def detect_rows(project: Path, config: dict) -> tuple[str, str]:
    """Digests of the photos the detector trains on and of those detect_fish reads (and scores on),
    from the tables the run wrote: its split tables, not the splits the Snakefile makes itself."""
    config = with_schema_defaults(config)
    clean = read_table(project / layout.CLEAN_TABLE)
    records = pd.concat([read_table(project / layout.RECORDS.format(source=s)) for s in config["sources"]])
    splits = [read_table(project / layout.SPLIT.format(dataset=d)) for d in config["datasets"]]
    synthetic = [name for name, spec in config["sources"].items() if kind_of(name, spec) == "synthetic"]
    detect = config["detect"]
    training = detect_scope.training_rows(
        clean, records, splits, synthetic, detect["train_photos"], detect["training"]["seed"]
    )
    looked_at = detect_scope.kept_rows(clean)[detect_scope.PHOTO_COLUMNS]
    scored_on = detect_scope.quality_rows(clean, records, splits, synthetic)
    return detect_scope.digest(training), detect_scope.digest(looked_at, scored_on)


def detector_training(project: Path, config: dict, clean: pd.DataFrame) -> str:
    """The digest of the photos the detector trains on, with every split made from `clean`."""
    config = with_schema_defaults(config)
    records = pd.concat([read_table(project / layout.RECORDS.format(source=s)) for s in config["sources"]])
    synthetic = [name for name, spec in config["sources"].items() if kind_of(name, spec) == "synthetic"]
    splits = detect_scope.dataset_splits(clean, config["datasets"])
    detect = config["detect"]
    return detect_scope.training_digest(
        clean, records, splits, synthetic, detect["train_photos"], detect["training"]["seed"]
    )


def first_photo(project: Path, config: dict, photos: pd.Series) -> str:
    return photos.iloc[0]


def photo_the_detector_does_not_need(project: Path, config: dict, photos: pd.Series) -> str:
    """The first of `photos` whose exclusion leaves the detector's training photos as they are
    (the splits made again without it move no photo it trains on)."""
    clean = read_table(project / layout.CLEAN_TABLE)
    before = detector_training(project, config, clean)
    for photo in photos:
        without = clean.assign(kept=clean["kept"].where(clean["sha256"] != photo, "False"))
        if detector_training(project, config, without) == before:
            return photo
    raise AssertionError("every photo's exclusion changes the detector's training photos")


def decide_and_run(tiny_project, tmp_path, taxon: str, decision, choose=first_photo) -> dict:
    """In a copy of the tiny project, one kept photo of `taxon` (`choose(project, config, its kept
    photos)`) decided on (`decision(project, photo)` writes the line), planned by the review
    app, then run: what each did, the photo, and whether the photos the detector trains on
    (looks at) changed, read from the tables the run wrote."""
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, symlinks=True)  # modification times kept
    config = config_of(project)
    clean = read_table(project / "results/clean/images.tsv")
    photo = choose(project, config, clean.loc[(clean["taxon"] == taxon) & (clean["kept"] == "True"), "sha256"])
    before = files_of(project / "results")
    rows_before = detect_rows(project, config)
    decision(project, photo)
    plan = review_plan.planned(project, [RUN_CONFIG], config)
    result = snakemake(project, "--profile", str(project / "profiles/local"))
    assert result.returncode == 0, result.stderr[-5000:]
    retrained, redetected = (b != a for b, a in zip(rows_before, detect_rows(project, config)))
    print(f"the detector's training photos changed: {retrained}; the photos it looks at: {redetected}")
    after = files_of(project / "results")
    return {
        "project": project,
        "config": config,
        "photo": photo,
        "plan": plan,
        "ran": set(review_plan.jobs_of(result.stderr)),
        "rewritten": {path for path in before if after.get(path) != before[path]},
        "retrained": retrained,
        "redetected": redetected or retrained,
    }


def expected_after_decision(outcome: dict, datasets: list[str]) -> tuple[set[str], list[str]]:
    """The jobs a decision that changes `datasets` reruns (their splits, caches and models, the
    detector where its photos changed, what else reads the clean table), and the models retrained."""
    config = outcome["config"]
    models = sorted(m for m, spec in config["models"].items() if spec["dataset"] in datasets)
    # A retrained detector rebuilds every crop cache and its models; other photos looked at
    # leave the crops of those it looked at before as they were.
    if outcome["retrained"]:
        models = sorted({*models, *(m for m, spec in config["models"].items() if "crop" in spec)})
    caches = {
        f"cache_{'crops' if 'crop' in spec else 'images'}[dataset={spec['dataset']}, size={spec['image_size']}]"
        for spec in (model_settings(config, m) for m in models)
    }
    expected = {
        "clean_images",
        "label_issues",
        "attribution",
        "citation",
        "report",
        "all",
        *(f"split_dataset[dataset={d}]" for d in datasets),
        *caches,
        *(f"{rule}[model={m}]" for m in models for rule in ("train_model", "evaluate_model")),
        *(["train_detector[detector=synthetic]"] if outcome["retrained"] else []),
        *(["detect_fish"] if outcome["redetected"] else []),
    }
    return expected, models


def assert_only(outcome: dict, datasets: list[str]):
    """The plan and the run are the expected jobs, and of the other datasets nothing (split,
    cache, backbone, model) is written again; the detector's files only where it retrained."""
    expected, models = expected_after_decision(outcome, datasets)
    plan, rewritten = outcome["plan"], outcome["rewritten"]
    assert plan["ok"] and plan["datasets"] == datasets
    assert set(plan["jobs"]) == expected, sorted(set(plan["jobs"]) ^ expected)
    assert outcome["ran"] == expected, sorted(outcome["ran"] ^ expected)
    assert ("detect/synthetic/weights.pt" in rewritten) == outcome["retrained"]
    assert ("detect/boxes.tsv" in rewritten) == outcome["redetected"]
    if outcome["redetected"]:
        # The fish are found again by looking only at the photos this detector has not seen.
        log = (outcome["project"] / "logs/detect_fish.log").read_text()
        looked_before, photos = map(int, re.search(r"(\d+) of (\d+) photos' boxes from", log).groups())
        assert looked_before == (0 if outcome["retrained"] else photos), log[-2000:]
    others = tuple(
        f"{kind}/{d}" for d in outcome["config"]["datasets"] if d not in datasets for kind in ("splits", "cache")
    )
    rewritten_others = [
        p
        for p in rewritten
        if p.startswith((*others, "backbones/")) or (p.startswith("models/") and p.split("/")[1] not in models)
    ]
    crop_caches = [p for p in rewritten_others if p.endswith("px-crops.pt")]
    assert [p for p in rewritten_others if p not in crop_caches] == [] and (not crop_caches or outcome["retrained"])
    assert {f"splits/{d}.tsv" for d in datasets} | {"clean/images.tsv"} <= rewritten
    assert {f"models/{m}/weights.pt" for m in models} <= rewritten
    assert planned_jobs(outcome["project"]) == {}


def test_an_exclusion_resplits_only_the_datasets_holding_the_photo(tiny_project, tmp_path):
    """One photo of A. ocellaris (a class of trio_other only) excluded: the review app's plan,
    then the real run, split trio_other again and retrain its models, and nothing of pair and
    pool (their splits, caches, backbones and models) is written again. The detector retrains
    (and the fish are found again) only where the photos it trains on (looks at) changed."""

    def exclude(project, photo):
        with open(project / "config/exclusions.tsv", "a") as table:
            table.write(f"{photo}\tblurred (test)\n")

    outcome = decide_and_run(tiny_project, tmp_path, "Amphiprion ocellaris", exclude)
    assert_only(outcome, ["trio_other"])
    # The photo leaves the kept photos: the fish are found again.
    assert outcome["redetected"]
    decisions = read_table(outcome["project"] / "results/splits/trio_other.decisions.tsv")
    assert (
        decisions.loc[decisions["sha256"] == outcome["photo"], "reason"]
        .str.contains("blurred (test)", regex=False)
        .all()
    )
    assert outcome["photo"] not in set(read_table(outcome["project"] / "results/splits/trio_other.tsv")["sha256"])


def test_an_exclusion_the_detector_does_not_train_on_leaves_the_other_datasets_crops(tiny_project, tmp_path):
    """One photo of A. ocellaris excluded whose splits move no photo the detector trains on:
    the fish are found again (a kept photo left) but the detector is not trained again, and
    pair's crop cache and its model on crops (RI2-crop) are not touched: only trio_other's
    split, caches and models are made again."""

    def exclude(project, photo):
        with open(project / "config/exclusions.tsv", "a") as table:
            table.write(f"{photo}\tblurred (test)\n")

    outcome = decide_and_run(
        tiny_project, tmp_path, "Amphiprion ocellaris", exclude, choose=photo_the_detector_does_not_need
    )
    assert outcome["redetected"] and not outcome["retrained"]
    assert_only(outcome, ["trio_other"])
    assert not any(p.endswith("px-crops.pt") or p.startswith("models/RI2-crop/") for p in outcome["rewritten"])


def test_a_relabel_within_the_other_pool_leaves_the_detector_and_the_crops(tiny_project, tmp_path):
    """A. polymnus relabelled A. sandaracinos: both are pooled into trio_other's "other", so its
    split is made again (its rows changed) but no photo changes role: the detector, its boxes,
    the crop caches and the models on crops are not touched."""

    def relabel(project, photo):
        with open(project / "config/relabels.tsv", "a") as table:
            table.write(f"{photo}\tAmphiprion sandaracinos\tlooks like it (test)\t2026-01-01\n")

    outcome = decide_and_run(tiny_project, tmp_path, "Amphiprion polymnus", relabel)
    assert not outcome["retrained"] and not outcome["redetected"]
    assert_only(outcome, ["trio_other"])


def test_an_edit_to_the_training_code_reruns_the_training_rules_and_downstream(tiny_project, job_graphs):
    _, training_and_after = planned(tiny_project, None, "--forcerun", "pretrain_backbone", "train_model")
    # Snakemake's own --forcerun plans are what the every-module test computes from the job graphs.
    assert expected_plan(job_graphs, {"pretrain_backbone", "train_model"}) == training_and_after
    _, cleaning_and_after = planned(tiny_project, None, "--forcerun", "clean_images")
    assert expected_plan(job_graphs, {"clean_images"}) == cleaning_and_after
    with edited(tiny_project / "workflow/fishid/train/loop.py"):
        counts, jobs = planned(tiny_project)
    assert jobs == training_and_after
    assert counts["train_model"] == len(config_of(tiny_project)["models"])
    # Nothing before training: the data are the same.
    assert not {rule_of(job) for job in jobs} & {
        "list_source",
        "fetch_images",
        "clean_images",
        "split_dataset",
        "cache_images",
        "attribution",
    }
    assert planned_jobs(tiny_project) == {}


def test_an_edit_to_any_module_reruns_exactly_the_rules_that_run_it_and_downstream(tiny_project, job_graphs):
    """For every module of the package: the rules whose step imports it (transitively, by
    fishid.codedeps, which tests/unit/test_codedeps.py checks against Python's imports) rerun with
    everything after them, and nothing else does."""
    root = tiny_project / "workflow"
    runs = {rule: {Path(f) for f in codedeps.step_files(root, step)} for rule, step in RULE_STEPS.items()}
    runs["list_source"] |= codedeps.closure(root, ["fishid.sources.synthetic"])  # the tiny run's one source kind
    assert set(RULE_STEPS) >= {rule_of(job) for job in job_graphs["cleaned"]} - {"all"}
    modules = sorted((root / "fishid").rglob("*.py"))
    plans = plans_after_edits(tiny_project, modules)
    assert list(plans) == modules
    for module, jobs in plans.items():
        rules = {rule for rule, files in runs.items() if module in files}
        expected = expected_plan(job_graphs, rules)
        assert jobs == expected, (str(module.relative_to(root)), sorted(rules), "differing:", sorted(jobs ^ expected))
    assert planned_jobs(tiny_project) == {}
