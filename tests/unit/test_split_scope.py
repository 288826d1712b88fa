"""Which clean-table rows a dataset's split reads (fishid.split.scope): a decision about one
photo must resplit the datasets that hold it, before or after the decision, and no other."""

import pandas as pd

from fishid.split import scope
from fishid.tables import HIGHER_RANKS

GENUS = {"Amphiprion": "Pomacentridae", "Chromis": "Pomacentridae", "Gobiodon": "Gobiidae"}


def clean_table(rows) -> pd.DataFrame:
    """(sha256, taxon, kept) rows with their ranks, as the clean table holds them."""
    table = pd.DataFrame(rows, columns=["sha256", "taxon", "kept"]).assign(reason="")
    genus = table["taxon"].str.split().str[0]
    ranks = {rank: "" for rank in HIGHER_RANKS}
    table = table.assign(**ranks)
    table["genus"], table["family"] = genus, genus.map(GENUS)
    return table


TABLE = clean_table(
    [
        ("a1", "Amphiprion clarkii", "True"),
        ("a2", "Amphiprion ocellaris", "True"),
        ("a3", "Amphiprion ocellaris", "False"),
        ("c1", "Chromis viridis", "True"),
        ("g1", "Gobiodon okinawae", "True"),
    ]
)
DATASETS = {
    "pair": {"species": ["Amphiprion clarkii", "Amphiprion percula"]},
    "ocellaris_other": {
        "species": ["Amphiprion ocellaris"],
        "other": {"label": "other", "species": ["Chromis viridis"]},
    },
    "damsels": {"species": {"within": "Pomacentridae", "top": 2}},
    "everything_other": {"species": ["Gobiodon okinawae"], "other": {"label": "other"}},
}


def held(table=TABLE):
    return {name: sorted(table.loc[scope.in_scope(table, spec), "sha256"]) for name, spec in DATASETS.items()}


def test_a_dataset_reads_its_species_its_rules_taxon_and_its_pool_kept_or_not():
    assert held() == {
        "pair": ["a1"],
        "ocellaris_other": ["a2", "a3", "c1"],
        "damsels": ["a1", "a2", "a3", "c1"],
        "everything_other": ["a1", "a2", "a3", "c1", "g1"],
    }


def test_an_exclusion_changes_the_datasets_holding_the_photo_only():
    after = TABLE.copy()
    after.loc[after["sha256"] == "a1", ["kept", "reason"]] = ["False", "excluded by user: blurred"]
    assert scope.changed_datasets(TABLE, after, DATASETS) == ["pair", "damsels", "everything_other"]


def test_a_relabel_changes_the_datasets_before_and_after():
    after = TABLE.copy()
    after.loc[after["sha256"] == "g1", "taxon"] = "Amphiprion clarkii"
    after.loc[after["sha256"] == "g1", ["genus", "family"]] = ["Amphiprion", "Pomacentridae"]
    assert scope.changed_datasets(TABLE, after, DATASETS) == ["pair", "damsels", "everything_other"]
    assert "ocellaris_other" not in scope.changed_datasets(TABLE, after, DATASETS)


def test_the_digest_is_the_rows_not_their_order_and_ignores_other_species():
    spec = DATASETS["ocellaris_other"]
    shuffled = TABLE.sample(frac=1, random_state=1)
    assert scope.digest(shuffled, spec) == scope.digest(TABLE, spec)
    other_species = TABLE.copy()
    other_species.loc[other_species["sha256"] == "g1", "reason"] = "too small"
    assert scope.digest(other_species, spec) == scope.digest(TABLE, spec)
    assert scope.digest(other_species, DATASETS["everything_other"]) != scope.digest(
        TABLE, DATASETS["everything_other"]
    )
