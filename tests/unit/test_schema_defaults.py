"""Each default is written once, as a `default:` of config/schema.yaml (issue #23): a description
that states one in words has the key too, and the values that used to live in the code
(fishid.variants.VARIANT_DEFAULTS, fishid.clean.stage.DEFAULTS, `.get(key, literal)`) reach a
configuration that leaves them out through the loader."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from fishid.config import (
    load_schema,
    model_settings,
    section_with_defaults,
    with_schema_defaults,
    with_training_defaults,
)

# Descriptions that name a default in words where no `default:` can say it, and why.
NOT_A_CONSTANT = {
    "$defs.source_synthetic.properties.seed": "the configuration's own seed",
    "$defs.source_gbif.properties.checklist_key": "pygbif's: no checklist is sent, GBIF chooses",
    "$defs.source_gbif_download.properties.request.properties.checklist_key": (
        "filled into the request it would change the request's hash, and a project would ask GBIF for a new download"
    ),
    # The HTTP client's defaults (the download section's) live in fishid.web.Settings, a layer
    # below the one that reads the schema.
    "properties.download.properties.allow_private_hosts": "fishid.web.Settings' own",
    "properties.datasets.additionalProperties.properties.max_per_occurrence": "no cap: the key's absence",
}
IN_WORDS = re.compile(r"\bdefault\b", re.IGNORECASE)


def described_nodes(node, path=""):
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            yield path, node
        for key, value in node.items():
            yield from described_nodes(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from described_nodes(value, f"{path}.{n}")


def defaults_in_words_only(schema: dict) -> list[str]:
    return [
        path
        for path, node in described_nodes(schema)
        if IN_WORDS.search(node["description"]) and "default" not in node and path not in NOT_A_CONSTANT
    ]


def test_no_description_states_a_default_that_the_schema_lacks():
    assert defaults_in_words_only(load_schema()) == []


def test_a_default_stated_only_in_words_is_found():
    schema = load_schema()
    schema["properties"]["clean"]["properties"]["min_side"]["description"] = "images smaller (default 32)"
    assert defaults_in_words_only(schema) == ["properties.clean.properties.min_side"]


def test_the_allow_list_names_real_keys_that_still_say_their_default_in_words():
    described = dict(described_nodes(load_schema()))
    for path in NOT_A_CONSTANT:
        assert IN_WORDS.search(described[path]["description"]) and "default" not in described[path], path


# What the code held before the schema did, written out once more here to check the move.
FORMER_VARIANT_DEFAULTS = {
    "optimizer": "sgd",
    "open_set": "class",
    "threshold_known_recall": 0.95,
    "freeze_backbone": True,
    "embedding_dim": 64,
    "margin": 0.5,
    "knn_k": 5,
    "prompt": "a photo of {species}",
    "cpu_bfloat16": False,
    "refit_batchnorm": True,
    "init": "kaiming",
    "collapse_warning_epochs": 5,
}
FORMER_CLEAN_DEFAULTS = {
    "max_pixels": 89478485,
    "near_duplicates": {"max_distance": 12, "keep": "largest"},
    "conflicts": "drop_all",
    "shards": 1,
}


@pytest.fixture
def tiny():
    return yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())


def test_the_variant_settings_defaults_fill_training_defaults_and_never_shadow_it(tiny):
    for key in FORMER_VARIANT_DEFAULTS:
        tiny["training_defaults"].pop(key, None)
        for spec in tiny["models"].values():
            spec.pop(key, None)
    tiny["training_defaults"]["optimizer"] = "adamw"
    name = next(iter(tiny["models"]))
    tiny["models"][name]["knn_k"] = 7
    filled = with_schema_defaults(tiny)
    assert filled["training_defaults"] == {
        **tiny["training_defaults"],
        **FORMER_VARIANT_DEFAULTS,
        "optimizer": "adamw",
    }
    # A model's entry gets none of them itself: its settings take the user's training_defaults.
    assert filled["models"] == tiny["models"]
    settings = model_settings(filled, name)
    assert settings["optimizer"] == "adamw" and settings["knn_k"] == 7 and settings["margin"] == 0.5


def test_settings_handed_alone_get_the_training_defaults_first_in_the_former_order():
    """As evaluation, the label-error queue and bench scripts are handed settings (meta.json keeps this order)."""
    settings = with_training_defaults({"arch": "ri", "optimizer": "adamw"})
    assert list(settings) == [*FORMER_VARIANT_DEFAULTS, "arch"]
    assert settings == {**FORMER_VARIANT_DEFAULTS, "arch": "ri", "optimizer": "adamw"}


def test_cleaning_and_the_defaults_once_in_words_come_from_the_schema(tiny):
    for key in FORMER_CLEAN_DEFAULTS:
        tiny["clean"].pop(key, None)
    tiny["sources"] = {
        **tiny["sources"],
        "gbif": {"kind": "gbif", "names": ["Amphiprion"]},
        "archive": {"kind": "gbif_download", "key": "0001-1"},
        "fb": {"kind": "fishbase", "species": ["Amphiprion ocellaris"]},
    }
    tiny["taxonomy"], tiny["download"] = {}, {}
    for spec in tiny["datasets"].values():
        spec.pop("test_fraction", None), spec.pop("use_source_split", None)
    filled = with_schema_defaults(tiny)
    assert {k: filled["clean"][k] for k in FORMER_CLEAN_DEFAULTS} == FORMER_CLEAN_DEFAULTS
    assert section_with_defaults({}, "clean") == FORMER_CLEAN_DEFAULTS | {"relabels": "config/relabels.tsv"}
    assert filled["sources"]["gbif"]["api"] == "https://api.gbif.org/"
    assert {k: filled["sources"]["archive"][k] for k in ("poll", "wait_hours", "cache", "api")} == {
        "poll": 60,
        "wait_hours": 24,
        "cache": "resources/gbif",
        "api": "https://api.gbif.org/",
    }
    assert filled["sources"]["fb"]["base_url"] == "https://www.fishbase.se/"
    assert filled["taxonomy"] == {
        "cache": "resources/taxonomy",
        "api": "https://api.gbif.org/",
        "checklist_key": "d7dddbf4-2cf0-4f39-9b2a-bb099caae36c",
        "min_confidence": 90,
    }
    assert filled["download"] == {"shards": 1}
    assert all(s["test_fraction"] == 0 and s["use_source_split"] is False for s in filled["datasets"].values())


def test_the_steps_defaults_are_the_schemas():
    """The code that once held a literal reads the same value from the schema."""
    from fishid.clean import stage
    from fishid.download import store
    from fishid.sources import gbif_request, taxonomy

    assert store.MAX_PIXELS == FORMER_CLEAN_DEFAULTS["max_pixels"]
    assert {k: v for k, v in stage.settings_with_defaults({}).items() if k in FORMER_CLEAN_DEFAULTS} == (
        FORMER_CLEAN_DEFAULTS
    )
    assert taxonomy.Settings.from_spec({}) == taxonomy.Settings(
        cache=Path("resources/taxonomy"),
        api="https://api.gbif.org/",
        checklist_key="d7dddbf4-2cf0-4f39-9b2a-bb099caae36c",
        min_confidence=90,
    )
    assert gbif_request._setting({}, "cache") == "resources/gbif" and gbif_request._setting({}, "poll") == 60
