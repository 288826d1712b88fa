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


def schema_kinds() -> tuple[list[str], list[tuple[str, str]]]:
    """The schema's enum of source kinds, and its allOf branches as (kind, the $defs entry it refers to)."""
    schema = yaml.safe_load(config.SCHEMA_PATH.read_text())
    entry = schema["properties"]["sources"]["additionalProperties"]
    branches = [(b["if"]["properties"]["kind"]["const"], b["then"]["$ref"]) for b in entry["allOf"]]
    return entry["properties"]["kind"]["enum"], branches


def test_the_registry_of_source_kinds_is_the_schemas_enum_and_each_kind_has_its_branch():
    from fishid.sources.kinds import KINDS

    enum, branches = schema_kinds()
    assert list(KINDS) == enum
    assert branches == [(name, f"#/$defs/source_{name}") for name in KINDS]


def test_each_kind_is_declared_once_in_its_own_module_and_every_declaration_is_registered():
    import ast
    import importlib

    from fishid.sources.base import SourceKind
    from fishid.sources.kinds import KINDS

    for name, declared in KINDS.items():
        assert isinstance(declared, SourceKind) and declared.name == name
        assert importlib.import_module(declared.module).KIND is declared, name
    # A module that declares a KIND but is not in the registry would be a kind no source can use.
    folder = REPO / "workflow" / "fishid" / "sources"
    declaring = {
        f"fishid.sources.{path.stem}"
        for path in folder.glob("*.py")
        if any(
            isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KIND" for t in node.targets)
            for node in ast.parse(path.read_text()).body
        )
    }
    assert declaring == {declared.module for declared in KINDS.values()}


def test_every_source_kind_the_schema_allows_has_a_citation_and_an_unknown_kind_is_an_error():
    from datetime import date

    from fishid.report.citation import source_citation
    from fishid.sources import base

    kinds, _ = schema_kinds()
    spec = {"path": "photos", "patterns": "species.tsv"}
    citations = {kind: source_citation(kind, spec, {}, date(2026, 1, 2))[0] for kind in kinds}
    assert [kind for kind, text in citations.items() if text.startswith("Synthetic")] == ["synthetic"], citations
    assert all(citations.values()), citations
    with pytest.raises(ValueError, match="unknown source kind 'inaturalist'"):
        source_citation("inaturalist", spec, {}, date(2026, 1, 2))
    for call in (base.local_inputs, base.list_source):
        with pytest.raises(ValueError, match="unknown source kind 'inaturalist'"):
            call("web", {"kind": "inaturalist"})


def test_the_fetch_stage_serves_every_kinds_own_url_scheme():
    from fishid.download import fetch
    from fishid.sources.kinds import BY_SCHEME

    assert fetch.SERVED == BY_SCHEME and set(BY_SCHEME) == {"synthetic"}
    assert not set(BY_SCHEME) & {"http", "https", "file"}
