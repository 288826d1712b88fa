"""The whole DAG through Snakemake on tests/config/tiny.yaml, then its outputs' contents."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO


def snakemake(workdir, *args):
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config" / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    # Jobs run `python` from PATH: make it this interpreter, as `make` does with the venv.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    (workdir / "config").mkdir()
    shutil.copy(REPO / "tests" / "config" / "tiny.yaml", workdir / "config" / "config.yaml")
    shutil.copy(REPO / "config" / "synthetic_species.tsv", workdir / "config")
    shutil.copy(REPO / "config" / "exclusions.tsv", workdir / "config")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, yaml.safe_load((workdir / "config" / "config.yaml").read_text())


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


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
    assert set(trio.loc[trio["label"] == "other", "taxon"]) <= {"Amphiprion polymnus", "Amphiprion sandaracinos"}


def test_every_model_is_trained_and_evaluated(tiny_run):
    workdir, config = tiny_run
    for name, model in config["models"].items():
        folder = workdir / "results/models" / name
        history = pd.read_csv(folder / "history.csv")
        assert len(history) == config["training_defaults"]["epochs"]
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["settings"]["arch"] == model["arch"] and meta["device"] == "cpu"
        weights = torch.load(folder / "weights.pt", weights_only=True)
        assert weights["classes"] == meta["classes"]
        metrics = json.loads((folder / "metrics.json").read_text())
        predictions = read(folder / "predictions.tsv")
        evaluated = predictions[predictions["split"] == metrics["evaluated_on"]]
        assert metrics["n"] == len(evaluated)
        assert metrics["correct"] == (evaluated["label"] == evaluated["predicted"]).sum()
        assert sum(map(sum, metrics["confusion"])) == metrics["n"]
    # A dataset with a test split reports test numbers.
    assert json.loads((workdir / "results/models/TL3o/metrics.json").read_text())["evaluated_on"] == "test"


class ImageSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_is_self_contained_and_shows_every_model_and_figure(tiny_run):
    workdir, config = tiny_run
    page = (workdir / "results/report/index.html").read_text()
    parser = ImageSources()
    parser.feed(page)
    # Eight figures per model, all inlined: the page is one file a user can mail.
    assert len(parser.sources) == 8 * len(config["models"])
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    for name in config["models"]:
        metrics = json.loads((workdir / "results/models" / name / "metrics.json").read_text())
        low, high = metrics["accuracy_ci95"]
        assert low <= metrics["accuracy"] <= high
        row = re.search(rf"<td>{re.escape(name)}</td>(.*?)</tr>", page, re.DOTALL).group(1)
        assert f"<td>{metrics['accuracy']:.3f} [{low:.2f}, {high:.2f}]</td>" in row, (name, row)
        assert f"<td>{metrics['correct']}/{metrics['n']}</td>" in row
        assert f'id="model-{name}"' in page
    for dataset in config["datasets"]:
        assert f"<h3>{dataset}</h3>" in page
    assert "tiny pre-trained backbone for the test" in page
    assert "TL3o-random: " in page  # the control's accuracy beside the model it controls
    for section in ("Images per source and licence", "Images per species and source", "Attribution"):
        assert section in page


def planned_jobs(workdir, config=None) -> dict[str, int]:
    """Jobs a dry run would run, by rule, for the given (changed) configuration."""
    args = ["--dry-run", "--quiet", "rules"]
    if config is not None:
        changed = workdir / "config" / "changed.yaml"
        changed.write_text(yaml.safe_dump(config))
        args += ["--configfile", str(changed)]
    result = snakemake(workdir, *args)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    table = re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE)
    return {rule: int(n) for rule, n in table if rule != "total"}


def test_nothing_to_do_after_a_complete_run(tiny_run):
    workdir, _ = tiny_run
    assert planned_jobs(workdir) == {}


def test_changing_one_model_reruns_only_that_model(tiny_run):
    workdir, config = tiny_run
    config["models"]["RI2"]["lr"] = 0.002
    assert planned_jobs(workdir, config) == {
        "train_model": 1,
        "evaluate_model": 1,
        "plot_model": 1,
        "report": 1,
        "all": 1,
    }


def test_offline_without_cached_imagenet_weights_stops_with_the_place_to_put_them(tiny_run):
    workdir, _ = tiny_run
    result = snakemake(workdir, "resources/weights/resnet18-f37072fd.pth")
    assert result.returncode != 0
    log = (workdir / "logs/imagenet_weights/resources/weights.log").read_text()
    assert "place it at resources/weights/resnet18-f37072fd.pth" in log
