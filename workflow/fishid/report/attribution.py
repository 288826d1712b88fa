"""Who to credit for every image the datasets use: one row per (image, source record).

Licences such as CC BY require naming the rights holder wherever the images are published;
`results/provenance/attribution.csv` is that list, built from the stage tables alone.

Its fields come from the sources, and a spreadsheet runs a cell that starts with `=`, `+`,
`-`, `@`, a tab or a carriage return as a formula (`=HYPERLINK(...)`): such a field is
written with a leading `'`, which spreadsheets show as text.
"""

import logging

import pandas as pd

from fishid import steps

log = logging.getLogger(__name__)

ATTRIBUTION_COLUMNS = [
    "sha256",
    "taxon",
    "datasets",
    "record_id",
    "source",
    "license",
    "rights_holder",
    "creator",
    "media_url",
    "page_url",
    "occurrence_id",
    "dataset_key",
]


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """A field a spreadsheet shows as text: one that starts like a formula gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value


def used_images(splits: pd.DataFrame) -> pd.DataFrame:
    """Each image in any dataset, with the datasets that use it (`a;b`)."""
    return (
        splits.groupby("sha256")["dataset"]
        .agg(lambda names: ";".join(sorted(set(names))))
        .rename("datasets")
        .reset_index()
    )


def stored_records(records: pd.DataFrame, downloads: pd.DataFrame) -> pd.DataFrame:
    """Source records joined to the image their download stored (failed downloads left out)."""
    stored = downloads[(downloads["error"] == "") & (downloads["sha256"] != "")][["record_id", "sha256"]]
    return stored.merge(records, on="record_id", how="inner", validate="one_to_one")


def attribution(
    records: pd.DataFrame, downloads: pd.DataFrame, clean: pd.DataFrame, splits: pd.DataFrame
) -> pd.DataFrame:
    """The attribution list: every record behind every image a dataset uses."""
    used = used_images(splits)
    linked = stored_records(records, downloads)
    taxa = clean[["sha256", "taxon"]].rename(columns={"taxon": "image_taxon"})
    table = used.merge(linked, on="sha256", how="left").merge(taxa, on="sha256", how="left")
    orphans = table.loc[table["record_id"].isna(), "sha256"]
    if len(orphans):
        raise ValueError(
            f"{len(orphans)} image(s) in the splits have no source record behind them "
            f"(first: {orphans.iloc[0]}): the record and download tables do not match the splits; "
            "rerun the pipeline from the source listing"
        )
    # The image's taxon is the one cleaning settled on; a record may have listed it otherwise.
    table["taxon"] = table["image_taxon"].fillna(table["taxon"])
    table = table.reindex(columns=ATTRIBUTION_COLUMNS).sort_values(["taxon", "sha256", "record_id"], ignore_index=True)
    return table.map(neutralise)


@steps.declare(
    "attribution",
    "who to credit for every image a dataset uses",
    steps.inp("records", nargs="+"),
    steps.inp("downloads", nargs="+"),
    steps.inp("clean"),
    steps.inp("splits", nargs="+"),
    steps.out("out", key=""),
)
def attribution_step(records, downloads, clean, splits, out):
    """The `attribution` step (rule attribution): the list, as CSV."""
    from fishid.tables import read_table, table_text, write_text_atomic

    def tables(paths):
        return pd.concat([read_table(p) for p in paths], ignore_index=True)

    table = attribution(tables(records), tables(downloads), read_table(clean), tables(splits))
    write_text_atomic(out, table_text(table, sep=","))
    log.info("%d image(s), %d rights holder(s)", table["sha256"].nunique(), table["rights_holder"].nunique())
