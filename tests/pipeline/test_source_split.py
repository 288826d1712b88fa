"""A folder source that comes split (the study's own train/ and val/) through the whole
pipeline, run as the README runs a configuration, with use_source_split: the split table
keeps the folders' roles for every kept photo."""

import hashlib
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO
from projectrun import environment, make_project

CONFIG = REPO / "tests" / "config" / "seed_mini.yaml"


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def folder_roles(root) -> dict[str, set[str]]:
    """SHA-256 -> the roles (train/val folders) its bytes were filed under."""
    roles = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        role = path.relative_to(root).parts[0]
        roles.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), set()).add(role)
    return roles


def test_the_studys_own_split_of_seed_mini_is_kept_end_to_end(seed_mini, tmp_path):
    project = make_project(tmp_path / "project", config=None)
    config = yaml.safe_load(CONFIG.read_text())
    # The file names the folder relative to a checkout beside ../shared; the copy lives elsewhere.
    assert config["sources"]["study"]["path"] == "../shared/data/seed-mini"
    assert (REPO / config["sources"]["study"]["path"]).resolve() == seed_mini.resolve()
    config["sources"]["study"]["path"] = str(seed_mini)
    (project / "config" / "seed_mini.yaml").write_text(yaml.safe_dump(config))

    command = [sys.executable, "-m", "snakemake", "--profile", "profiles/local"]
    command += ["--configfile", "config/seed_mini.yaml"]
    result = subprocess.run(command, cwd=project, env=environment(), capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-5000:]

    clean = read(project / "results/clean/images.tsv")
    kept = clean[clean["kept"] == "True"]
    given = folder_roles(seed_mini)
    # Every photo; seed-mini's one GIF is a 15-colour drawing, dropped for it.
    dropped = clean.loc[clean["kept"] != "True", ["sha256", "reason"]]
    assert len(kept) == 51 and dropped["reason"].str.contains("few colours").tolist() == [True], dropped
    split = read(project / "results/splits/two_species.tsv")
    assert len(split) == len(kept) and set(split["sha256"]) == set(kept["sha256"])
    for sha, role in zip(split["sha256"], split["split"]):
        assert given[sha] == {role}, (sha, given[sha], role)
    counts = read(project / "results/splits/two_species.counts.tsv").set_index("label")
    assert counts.loc["total", "val"] == str(sum(1 for sha in kept["sha256"] if given[sha] == {"val"}))
    assert "<h3>two_species</h3>" in (project / "results/report/index.html").read_text()


@pytest.mark.parametrize("flag", [True, False])
def test_the_clean_table_carries_the_roles_a_folder_gave(flag, tmp_path):
    """Unit-level: one photo in train/ and val/ is recorded as given both."""
    from fishid.clean import stage as clean

    links = pd.DataFrame(
        {
            "record_id": ["f:train/a/1.jpg", "f:val/a/1.jpg", "f:train/a/2.jpg"],
            "source": ["f"] * 3,
            "sha256": ["1" * 64, "1" * 64, "2" * 64],
            "path": ["x", "x", "y"],
            "taxon": ["A a"] * 3,
            "occurrence_id": ["o1", "o2", "o3"],
            "basis_of_record": [""] * 3,
            "preparations": [""] * 3,
            "source_split": ["train", "val", "train"] if flag else [""] * 3,
        }
    )
    links = clean.record_reasons(links, {}, {})
    decoded = pd.DataFrame({"sha256": ["1" * 64, "2" * 64], "kept": [True, True], "reason": ["", ""]})
    table = clean.image_table(links, decoded, {}).set_index("sha256")
    assert table["source_split"].tolist() == (["train|val", "train"] if flag else ["", ""])
