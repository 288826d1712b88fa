"""A run in progress: Snakemake removes a job's old outputs before the job runs again, so a
table `fishid audit` or `fishid review` has just listed can be gone when read. It must count as
not made yet, not stop the page (the review app answered 500 beside a running Snakemake)."""

import json
from pathlib import Path

import pandas as pd

from fishid.report import audit
from fishid.tables import write_table


def test_tables_removed_between_listing_and_reading_count_as_not_made_yet(tmp_path):
    write_table(pd.DataFrame({"sha256": ["a"], "taxon": ["A. clarkii"]}), tmp_path / "resources/records/gbif.tsv")
    splits = tmp_path / "results/splits"
    write_table(pd.DataFrame({"dataset": ["pair"], "sha256": ["a"], "split": ["train"]}), splits / "pair.tsv")
    # Listed by the glob, gone when opened: a dangling link is exactly that.
    (splits / "trio.tsv").symlink_to(tmp_path / "removed-by-snakemake.tsv")
    model = tmp_path / "results/models/RI2"
    model.mkdir(parents=True)
    (model / "meta.json").write_text(json.dumps({"settings": {"dataset": "pair"}}))
    (model / "predictions.tsv").symlink_to(tmp_path / "removed-too.tsv")
    (model / "metrics.json").symlink_to(tmp_path / "and-this.json")

    prov = audit.load(tmp_path)

    assert prov.splits["dataset"].tolist() == ["pair"]
    assert prov.models["RI2"]["metrics"] == {} and prov.predictions.empty
    assert prov.clean.empty and list(prov.clean.columns) == ["sha256", "kept", "taxon"]


def test_input_files_lists_every_file_load_reads(tmp_path, monkeypatch):
    """The review app keeps a reading of the tables while input_files' signature stays the
    same: a file load() read but input_files left out would go stale on the page."""
    write_table(pd.DataFrame({"sha256": ["a"], "taxon": ["A. clarkii"]}), tmp_path / "resources/records/gbif.tsv")
    write_table(pd.DataFrame({"sha256": ["a"]}), tmp_path / "resources/records/gbif.summary.tsv")
    write_table(pd.DataFrame({"record_id": ["1"], "sha256": ["a"]}), tmp_path / "resources/downloads/gbif.tsv")
    write_table(pd.DataFrame({"sha256": ["a"], "kept": ["True"]}), tmp_path / "results/clean/images.tsv")
    splits = tmp_path / "results/splits"
    write_table(pd.DataFrame({"dataset": ["pair"], "sha256": ["a"], "split": ["train"]}), splits / "pair.tsv")
    write_table(pd.DataFrame({"sha256": ["a"], "decision": ["leak"]}), splits / "pair.decisions.tsv")
    for folder in ("results/models/RI2", "results/backbones/B"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "meta.json").write_text("{}")
    (tmp_path / "results/models/RI2/metrics.json").write_text("{}")
    write_table(pd.DataFrame({"sha256": ["a"], "model": ["RI2"]}), tmp_path / "results/models/RI2/predictions.tsv")
    write_table(pd.DataFrame({"image": ["a"]}), tmp_path / "results/detect/crops.tsv")
    read = []
    real = audit.read_if_there
    monkeypatch.setattr(
        audit, "read_if_there", lambda reader, path, *rest: read.append(Path(path)) or real(reader, path, *rest)
    )

    audit.load(tmp_path)

    listed = {p for paths in audit.input_files(tmp_path).values() for p in paths}
    assert set(read) <= listed and len(read) == 11
    before = audit.signature(audit.input_files(tmp_path))
    (tmp_path / "results/detect/no_fish.tsv").write_text("image\n")
    assert audit.signature(audit.input_files(tmp_path)) != before
