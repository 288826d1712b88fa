"""From a name to a run: `fishid init Amphiprion > config/amphiprion-auto.yaml`, then Snakemake
plans the pipeline with that file as its whole configuration (a dry run in a copy of the project)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO
from fake_sites import FakeSites
from projectrun import environment, make_project, planned
from site_replies import backbone_match, occurrence_counts

STUDY_MODELS = {"RI2", "TL2", "RI4", "TL4", "TL4.2"}


def init(*arguments) -> str:
    """What `fishid init` writes to standard output, run as a user runs it."""
    command = [sys.executable, str(REPO / "workflow" / "fishid_cli.py"), "init", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_the_written_configuration_plans_the_pipeline(tmp_path, online):
    if online:
        with FakeSites() as sites:
            sites.add("/v2/species/match", backbone_match)
            sites.add("/v1/occurrence/search", occurrence_counts)
            settings = json.dumps({"allow_private_hosts": True, "backoff": 0.01})
            text = init("Amphiprion", "--api", sites.url("/"), "--download", settings)
    else:
        text = init("Amphiprion", "--offline")
    written = tmp_path / "amphiprion-auto.yaml"
    written.write_text(text)
    project = make_project(tmp_path / "project", config=None)
    counts, jobs = planned(project, None, configfiles=[written])
    sources = {"gbif", "fishbase", "fishpix"} if online else {"gbif"}
    assert {job for job in jobs if job.startswith("list_source")} == {f"list_source[source={s}]" for s in sources}
    assert {job for job in jobs if job.startswith("train_model")} == {f"train_model[model={m}]" for m in STUDY_MODELS}
    assert counts["split_dataset"] == 3 and counts["report"] == 1
