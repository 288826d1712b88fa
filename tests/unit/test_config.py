import copy

import pytest
import yaml
from conftest import REPO

from fishid.config import ConfigError, load, model_settings, validate


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config/config.yaml", "tests/config/tiny.yaml"])
def test_shipped_configurations_are_valid(path):
    load(REPO / path)


def test_demo_declares_the_study_models(demo):
    assert {"RI2", "TL2", "RI4", "TL4", "TL4.2"} <= set(demo["models"])


def problems(config):
    with pytest.raises(ConfigError) as error:
        validate(config)
    return str(error.value)


def test_wrong_type_names_the_key(demo):
    demo["models"]["TL2"]["lr"] = "fast"
    assert "models.TL2.lr: 'fast' is not of type 'number'" in problems(demo)


def test_misspelt_key_is_named_alone(demo):
    demo["models"]["TL2"]["learning_rate"] = 0.1
    message = problems(demo)
    assert "models.TL2: unknown key(s) learning_rate" in message
    assert "image_size," in message  # the known keys are listed to help the fix


def test_every_problem_is_reported_at_once(demo):
    demo["datasets"]["two_species"]["val_fraction"] = 1.5
    del demo["report"]
    message = problems(demo)
    assert "2 problem(s)" in message
    assert "datasets.two_species.val_fraction: 1.5 is greater than the maximum of 1" in message
    assert "'report' is a required property" in message


def test_dangling_references_are_named(demo):
    broken = copy.deepcopy(demo)
    broken["models"]["TL2"]["dataset"] = "three_species"
    broken["models"]["TL4"]["backbone"] = "imagenet"
    message = problems(broken)
    assert "models.TL2.dataset: 'three_species' is not one of" in message
    assert "models.TL4.backbone: 'imagenet' is neither 'random' nor one of ['pool']" in message


def test_model_settings_override_the_study_defaults(demo):
    settings = model_settings(demo, "RI2")
    assert settings["lr"] == 0.001 and settings["momentum"] == 0.9 and settings["batch_size"] == 16
    assert settings["arch"] == "ri" and settings["epochs"] == demo["models"]["RI2"]["epochs"]


def test_every_default_is_filled_from_the_schema_at_every_depth_and_nothing_else_is_added():
    from fishid.config import with_schema_defaults

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["detect"] = {"detector": "owlv2", "owlv2": {"queries": ["a clownfish"]}}
    config.pop("review", None)
    filled = with_schema_defaults(config)
    # A section left out whose default is an object is filled, and so are its keys' defaults.
    assert filled["review"]["predict_roots"] == ["."] and filled["review"]["label_issues"]["folds"] == 5
    # A key given keeps its value; its siblings get theirs, two levels down.
    assert filled["detect"]["owlv2"] == {
        "queries": ["a clownfish"],
        "model": "google/owlv2-base-patch16-ensemble",
        "cache": "resources/weights/transformers",
    }
    assert filled["detect"]["threshold"] == 0.5 and filled["clean"]["relabels"] == "config/relabels.tsv"
    # A section without a default of its own is not invented.
    config.pop("detect")
    assert "detect" not in with_schema_defaults(config)
    assert set(filled) - set(config) == {"detect", "review"}


def test_a_section_handed_alone_gets_the_schemas_defaults_of_that_section():
    """As a step's CLI command or a test hands it one section: what it gives is kept."""
    from fishid.config import section_with_defaults

    given = {"epochs": 2, "widths": [4, 8]}
    assert section_with_defaults(given, "detect", "training") == {
        "epochs": 2,
        "widths": [4, 8],
        "batch_size": 8,
        "lr": 0.01,
        "seed": 0,
    }
    assert given == {"epochs": 2, "widths": [4, 8]}
