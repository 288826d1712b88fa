"""The demo itself: config/config.yaml run as the README runs it (`snakemake --profile
profiles/local`) in a copy of the project, then the claims the README makes about it.

It is the longest test (about 8 minutes on 2 cores); `pytest -m "not demo"` leaves it out
while iterating, CI runs it."""

import json

import pytest
import yaml
from projectrun import make_project, snakemake
from reportcheck import FIGURES_PER_MODEL, check_report, render_in_chromium

pytestmark = pytest.mark.demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("demo"), config=None)
    result = snakemake(project, "--profile", str(project / "profiles/local"), timeout=1800)
    assert result.returncode == 0, result.stderr[-5000:]
    return project, yaml.safe_load((project / "config/config.yaml").read_text())


def metrics(project, name) -> dict:
    return json.loads((project / "results/models" / name / "metrics.json").read_text())


def test_every_model_beats_the_majority_class_baseline(demo):
    project, config = demo
    for name in config["models"]:
        scores = metrics(project, name)
        assert scores["accuracy"] > scores["majority_baseline"], (name, scores["accuracy"], scores["majority_baseline"])


def test_every_transfer_model_beats_the_same_network_on_a_random_backbone(demo):
    project, config = demo
    controls = {spec["control_of"]: name for name, spec in config["models"].items() if spec.get("control_of")}
    assert {"TL2", "TL4", "TL4.2"} <= set(controls)
    for model, control in controls.items():
        assert metrics(project, model)["accuracy"] > metrics(project, control)["accuracy"], (model, control)


def test_the_report_shows_every_section_for_every_model(demo):
    project, config = demo
    page = check_report(project, config)
    # The demo's backbone is pre-trained in the pipeline, not ImageNet's: the page says so.
    assert "Offline stand-in for ImageNet" in page


def test_the_report_renders_in_headless_chromium(demo):
    project, config = demo
    sizes = render_in_chromium(project / "results/report/index.html", project / "results/report/screenshot.png")
    assert len(sizes) == FIGURES_PER_MODEL * len(config["models"])
