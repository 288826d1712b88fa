"""config/amphiprion.yaml (the real study) is valid and plans the whole DAG; source config errors are named."""

import pytest
import yaml
from conftest import REPO
from projectrun import make_project, planned

from fishid import config


def test_the_real_study_config_is_valid_and_complete():
    study = config.load(REPO / "config" / "amphiprion.yaml")
    assert study["offline"] is False
    kinds = {name: spec["kind"] for name, spec in study["sources"].items()}
    assert sorted(kinds.values()) == ["fishbase", "fishpix", "gbif"]
    assert study["sources"]["gbif"]["names"] == ["Amphiprion"]
    assert {"RI2", "TL2", "RI4", "TL4", "TL4.2"} <= set(study["models"])
    for name in ("TL2", "TL4", "TL4.2"):
        assert study["backbones"][study["models"][name]["backbone"]]["source"] == "imagenet"
    assert set(study["datasets"]) == {"two_species", "four_species", "five_classes"}
    assert study["datasets"]["five_classes"]["other"]["size"] == 312


def test_the_real_study_plans_its_own_sources_datasets_and_models_only(tmp_path):
    """The README's command for the study, in a fresh copy of the project:
    `snakemake -n --configfile config/amphiprion.yaml`; nothing of the demo may join."""
    project = make_project(tmp_path, config=None)
    study = yaml.safe_load((project / "config/amphiprion.yaml").read_text())
    demo = yaml.safe_load((project / "config/config.yaml").read_text())
    counts, jobs = planned(project, configfiles=[project / "config/amphiprion.yaml"])

    def planned_for(rule):
        return {job.split("=", 1)[1].rstrip("]") for job in jobs if job.startswith(f"{rule}[")}

    assert planned_for("list_source") == planned_for("fetch_images") == {"gbif", "fishbase", "fishpix"}
    assert planned_for("split_dataset") == {"two_species", "four_species", "five_classes"}
    assert {"RI2", "TL2", "RI4", "TL4", "TL4.2"} <= set(study["models"])
    assert planned_for("train_model") == planned_for("evaluate_model") == set(study["models"])
    demo_only = set(demo["models"]) - {"RI2", "TL2", "RI4", "TL4", "TL4.2"}
    assert demo_only and not demo_only & set(study["models"])
    assert "pretrain_backbone" not in counts
    assert counts["imagenet_weights"] == 1 and counts["report"] == 1


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


def test_every_source_kind_the_schema_allows_has_an_adapter_and_a_citation():
    from datetime import date

    from fishid.report.citation import source_citation
    from fishid.sources.base import ADAPTERS

    schema = yaml.safe_load(config.SCHEMA_PATH.read_text())
    kinds = schema["properties"]["sources"]["additionalProperties"]["properties"]["kind"]["enum"]
    assert list(kinds) == list(ADAPTERS)
    spec = {"path": "photos", "patterns": "species.tsv"}
    citations = {kind: source_citation(kind, spec, {}, date(2026, 1, 2))[0] for kind in kinds}
    assert [kind for kind, text in citations.items() if text.startswith("Synthetic")] == ["synthetic"], citations
    assert all(citations.values()), citations
    with pytest.raises(ValueError, match="no citation for source kind 'inaturalist'"):
        source_citation("inaturalist", spec, {}, date(2026, 1, 2))
