"""The rows of the clean table a dataset's split reads: its species (listed, or within its
rule's taxon) and its "other" pool's. Rule split_dataset reruns when these rows change (their
digest is one of its params), not whenever cleaning reruns: a decision about one photo
resplits the datasets that hold it, before or after the decision, and no other."""

import hashlib

import pandas as pd

from fishid.config import explicit_species
from fishid.tables import HIGHER_RANKS


def with_ranks(table: pd.DataFrame) -> pd.DataFrame:
    """A clean table written before the ranks came holds none: read them as empty."""
    missing = [rank for rank in HIGHER_RANKS if rank not in table.columns]
    return table.assign(**dict.fromkeys(missing, "")) if missing else table


def is_species(images: pd.DataFrame) -> pd.Series:
    """A taxon named as one of its own ranks (a photo named only to its genus) is no species."""
    return (images["taxon"] != "") & ~images[HIGHER_RANKS].eq(images["taxon"], axis=0).any(axis=1)


def within(images: pd.DataFrame, taxon: str) -> pd.Series:
    """Images of a species that has `taxon` at one of its ranks (kingdom ... genus)."""
    return images[HIGHER_RANKS].eq(taxon).any(axis=1) & is_species(images)


def _species_rows(table: pd.DataFrame, spec: dict) -> pd.Series:
    species = explicit_species(spec)
    return table["taxon"].isin(species) if species is not None else within(table, spec["species"]["within"])


def _pool_rows(table: pd.DataFrame, other: dict | None) -> pd.Series:
    if not other:
        return pd.Series(False, index=table.index)
    if "species" in other:
        return table["taxon"].isin(other["species"])
    if "within" in other:
        return within(table, other["within"])
    return pd.Series(True, index=table.index)  # a pool of every other species reads every row


def in_scope(table: pd.DataFrame, spec: dict) -> pd.Series:
    """The rows (kept or not: the split's decisions table lists the dropped ones) whose change
    can change the dataset's split."""
    table = with_ranks(table)
    return _species_rows(table, spec) | _pool_rows(table, spec.get("other"))


def digest(table: pd.DataFrame, spec: dict) -> str:
    """SHA-256 of the dataset's rows, in SHA-256 order, every column."""
    rows = table[in_scope(table, spec)].sort_values("sha256", kind="stable")
    return hashlib.sha256(rows.to_csv(sep="\t", index=False).encode()).hexdigest()


def changed_datasets(before: pd.DataFrame, after: pd.DataFrame, datasets: dict) -> list[str]:
    """The datasets whose rows differ between two clean tables: those a rerun would split again."""
    return [name for name, spec in datasets.items() if digest(before, spec) != digest(after, spec)]
