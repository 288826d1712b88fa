"""config/amphiprion.yaml (the real study) is valid and plans the whole DAG; source config errors are named."""

import pytest
import yaml
from conftest import REPO
from projectrun import make_project, snakemake

from fishid import config


def test_the_real_study_config_is_valid_and_complete():
    study = config.load(REPO / "config" / "amphiprion.yaml")
    assert study["offline"] is False
    kinds = {name: spec["kind"] for name, spec in study["sources"].items()}
    assert sorted(kinds.values()) == ["fishbase", "fishpix", "gbif"]
    assert study["sources"]["gbif"]["names"] == ["Amphiprion"]
    assert set(study["models"]) == {"RI2", "TL2", "RI4", "TL4", "TL4.2"}
    for name in ("TL2", "TL4", "TL4.2"):
        assert study["backbones"][study["models"][name]["backbone"]]["source"] == "imagenet"
    assert set(study["datasets"]) == {"two_species", "four_species", "five_classes"}
    assert study["datasets"]["five_classes"]["other"]["size"] == 312


def test_the_real_study_plans_every_stage(tmp_path):
    project = make_project(tmp_path, config=REPO / "config" / "amphiprion.yaml")
    result = snakemake(project, "--dry-run", "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    for rule in ("list_source", "fetch_images", "imagenet_weights", "train_model", "report"):
        assert rule in result.stdout
    for source in ("gbif", "fishbase", "fishpix"):
        assert f"resources/downloads/{source}.tsv" in result.stdout


@pytest.mark.parametrize(
    "source, message",
    [
        ({"kind": "gbif", "names": ["amphiprion"]}, "sources.web.names.0: 'amphiprion' does not match"),
        ({"kind": "gbif_download"}, "sources.web: 'path' is a required property"),
        (
            {"kind": "fishpix", "base_url": "https://fishpix.kahaku.go.jp/"},
            "sources.web: 'genus' is a required property",
        ),
        ({"kind": "folder", "path": "x", "licence": "CC0", "colour": 1}, "'colour' was unexpected"),
        ({"kind": "ftp"}, "sources.web.kind: 'ftp' is not one of"),
    ],
)
def test_a_bad_source_is_named(source, message):
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    demo["sources"]["web"] = source
    with pytest.raises(config.ConfigError, match=message):
        config.validate(demo)
