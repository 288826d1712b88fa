"""A run in progress: Snakemake removes a job's old outputs before the job runs again, so a
table `fishid audit` or `fishid review` has just listed can be gone when read. It must count as
not made yet, not stop the page (the review app answered 500 beside a running Snakemake)."""

import json

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
