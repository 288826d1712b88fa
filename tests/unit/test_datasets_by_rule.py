"""Datasets chosen by rule (`species: {within: ..., top: N, min_images: M}`, `other: {within: ...}`)
and capped per occurrence (`max_per_occurrence`): on the study's real GBIF download, and on
small hand-made clean tables."""

import copy
import csv
import hashlib
from collections import Counter

import pandas as pd
import pytest
import yaml
from conftest import REPO, SHARED_DATA, missing_data

from fishid.clean.stage import CLEAN_COLUMNS
from fishid.config import ConfigError, explicit_species, validate
from fishid.review.views import species_of_config
from fishid.sources import dwca
from fishid.split.stage import count_table, make_split, run, split_dataset
from fishid.tables import HIGHER_RANKS, SPLIT_COLUMNS, read_table, write_table

ARCHIVE = SHARED_DATA / "gbif-download-amphiprion-2018"
SPEC = {"val_fraction": 0.1, "test_fraction": 0.1, "cap_ratio": 1000, "seed": 3}
AMPHIPRION = {
    "kingdom": "Animalia",
    "phylum": "Chordata",
    "class": "Actinopterygii",
    "order": "Perciformes",
    "family": "Pomacentridae",
    "genus": "Amphiprion",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tsv_rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def archive():
    if not ARCHIVE.is_dir():
        missing_data(ARCHIVE, "the real GBIF download")
    return ARCHIVE


@pytest.fixture(scope="module")
def archive_clean(archive):
    """A clean table as cleaning would write it for the archive if every photo were kept:
    one image per multimedia row (listed by the project's own adapter), its record's species,
    its occurrence as its group, and the ranks from occurrence.txt's own columns where the
    records do not carry them yet."""
    occurrences = {row["gbifID"]: row for row in tsv_rows(archive / "occurrence.txt")}
    rows = []
    for n, record in enumerate(dwca.read_listing(archive).records):
        occurrence = occurrences[record["occurrence_id"].removeprefix("gbif:")]
        ranks = {rank: record.get(rank) or occurrence[rank] for rank in HIGHER_RANKS}
        rows.append(
            {
                "sha256": sha(record["record_id"]),
                "taxon": record["taxon"],
                "listed_as": record["taxon"],
                "record_ids": record["record_id"],
                "kept": "True",
                "reason": "",
                "group": record["occurrence_id"],
                "near_duplicate_cluster": "",
                # Sizes vary, so that the cap per occurrence has a largest photo to keep.
                "width": str(400 + (n * 37) % 300),
                "height": "300",
                "derived_path": "",
                "sources": "gbif2018",
                "source_split": "",
                **ranks,
            }
        )
    return pd.DataFrame(rows)


def archive_counts(archive, per_occurrence=False) -> Counter:
    """Photos (or occurrences with photos) per species, read from the archive's files alone."""
    species = {row["gbifID"]: row["species"] for row in tsv_rows(archive / "occurrence.txt")}
    media = [row["gbifID"] for row in tsv_rows(archive / "multimedia.txt")]
    if per_occurrence:
        media = sorted(set(media))
    return Counter(species[gbif_id] for gbif_id in media if species[gbif_id])


def top(counts: Counter, n: int) -> list[str]:
    return sorted(counts, key=lambda s: (-counts[s], s))[:n]


def test_top_4_within_amphiprion_chooses_the_species_with_the_most_kept_photos(archive, archive_clean):
    counts = archive_counts(archive)
    assert len(counts) == 27, "the study's download: photos of 27 species, and some named only to the genus"
    expected = top(counts, 4)
    spec = {**SPEC, "species": {"within": "Amphiprion", "top": 4}}
    split, decisions, choice = split_dataset(archive_clean, "top4", spec)
    assert sorted(set(split["label"])) == sorted(expected)
    assert split.groupby("label").size().to_dict() == {s: counts[s] for s in expected}
    # Every other species of the genus is left out, saying why with its own count.
    left_out = decisions[decisions["decision"] == "not chosen"].drop_duplicates("taxon").set_index("taxon")["reason"]
    assert sorted(left_out.index) == sorted(set(counts) - set(expected))
    for species, reason in left_out.items():
        assert reason == f"not in the top 4 within Amphiprion ({counts[species]} kept photos)", species
    # Photos named only to the genus are no species: neither chosen nor a species left out.
    genus_only = archive_clean["taxon"] == "Amphiprion"
    assert genus_only.any()
    assert not set(archive_clean.loc[genus_only, "sha256"]) & (set(split["sha256"]) | set(decisions["sha256"]))
    # The split carries the ranks; the counts say why each species is a class.
    assert list(split.columns) == SPLIT_COLUMNS
    assert (split[HIGHER_RANKS] == pd.Series(AMPHIPRION)).all().all()
    chosen = count_table(split, decisions, choice).set_index("label")
    for place, species in enumerate(expected, 1):
        assert chosen.loc[species, "chosen"] == f"within Amphiprion, top 4: #{place} ({counts[species]} kept photos)"
    # The same choice and split from the same photos listed in another order.
    shuffled = make_split(archive_clean.sample(frac=1, random_state=1), "top4", spec)
    assert split.equals(shuffled[0]) and decisions.equals(shuffled[1])


def test_max_per_occurrence_keeps_the_largest_photo_of_each_occurrence(archive, archive_clean):
    photos_per_occurrence = archive_clean.groupby("group").size()
    several = photos_per_occurrence[photos_per_occurrence > 1].index
    assert len(several) > 100, "the archive has occurrences with several photos"
    spec = {**SPEC, "species": {"within": "Amphiprion", "top": 4}, "max_per_occurrence": 1}
    split, decisions, choice = split_dataset(archive_clean, "one_each", spec)
    # Capped first, the species are chosen on the occurrences with photos.
    occurrences = archive_counts(archive, per_occurrence=True)
    assert sorted(set(split["label"])) == sorted(top(occurrences, 4))
    assert split.groupby("label").size().to_dict() == {s: occurrences[s] for s in top(occurrences, 4)}
    # A. perideraion has the 4th most photos but the 2nd most occurrences.
    assert top(archive_counts(archive), 4).index("Amphiprion perideraion") == 3
    chosen = count_table(split, decisions, choice).set_index("label")
    assert chosen.loc["Amphiprion perideraion", "chosen"] == (
        f"within Amphiprion, top 4: #2 ({occurrences['Amphiprion perideraion']} kept photos, at most 1 per occurrence)"
    )
    assert split["group"].is_unique
    capped = decisions[decisions["decision"] == "capped per occurrence"]
    assert set(capped["group"]) <= set(several)
    pixels = archive_clean.assign(pixels=archive_clean["width"].astype(int) * archive_clean["height"].astype(int))
    for group in set(split["group"]) & set(several):
        photos = pixels[pixels["group"] == group].sort_values(["pixels", "sha256"], ascending=[False, True])
        kept = split.loc[split["group"] == group, "sha256"].tolist()
        assert kept == photos["sha256"].tolist()[:1]
        assert set(capped.loc[capped["group"] == group, "sha256"]) == set(photos["sha256"].tolist()[1:])
    assert capped["reason"].str.startswith("at most 1 photo(s) per occurrence (max_per_occurrence): group ").all()


def clean_table(counts: dict[str, int], genera: dict[str, str] | None = None) -> pd.DataFrame:
    """Kept photos per species, one group each; a species' genus is its first word, its
    family F, unless `genera` names the genus of a species' family (genus -> family)."""
    rows = []
    for taxon, n in counts.items():
        genus = taxon.split()[0]
        ranks = {**AMPHIPRION, "genus": genus, "family": (genera or {}).get(genus, "Pomacentridae")}
        rows += [
            {"sha256": sha(f"{taxon}{i}"), "taxon": taxon, "listed_as": taxon, "kept": "True", "reason": "", **ranks}
            for i in range(n)
        ]
    table = pd.DataFrame(rows)
    return table.assign(group=table["sha256"], derived_path="", sources="s", width="10", height="10")


def left_out(decisions: pd.DataFrame) -> dict[str, str]:
    rows = decisions[decisions["decision"] == "not chosen"].drop_duplicates("taxon")
    return dict(zip(rows["taxon"], rows["reason"]))


def test_min_images_chooses_every_species_with_enough_kept_photos_within_the_taxon():
    table = clean_table({"Aa a": 60, "Aa b": 50, "Aa c": 49, "Bb d": 100})
    split, decisions = make_split(table, "d", {**SPEC, "species": {"within": "Aa", "min_images": 50}})
    assert sorted(set(split["label"])) == ["Aa a", "Aa b"]
    # Bb d is not within Aa: not considered, so no decision about it.
    assert left_out(decisions) == {"Aa c": "below min_images 50 within Aa (49 kept photos)"}
    # With top as well: at least min_images, then the most.
    split, decisions = make_split(table, "d", {**SPEC, "species": {"within": "Aa", "min_images": 50, "top": 1}})
    assert set(split["label"]) == {"Aa a"}
    assert left_out(decisions) == {
        "Aa b": "not in the top 1 within Aa (50 kept photos)",
        "Aa c": "below min_images 50 within Aa (49 kept photos)",
    }


def test_within_matches_any_rank_and_ties_go_by_name_whatever_the_order():
    table = clean_table(
        {"Aa a": 30, "Bb c": 20, "Aa b": 20, "Aa d": 10, "Cc e": 90},
        genera={"Aa": "Pomacentridae", "Bb": "Pomacentridae", "Cc": "Labridae"},
    )
    spec = {**SPEC, "species": {"within": "Pomacentridae", "top": 2}}
    split, decisions = make_split(table, "d", spec)
    assert sorted(set(split["label"])) == ["Aa a", "Aa b"]
    assert left_out(decisions) == {
        "Bb c": "not in the top 2 within Pomacentridae (20 kept photos; as many as #2, ties go by name)",
        "Aa d": "not in the top 2 within Pomacentridae (10 kept photos)",
    }
    for seed in range(3):
        again = make_split(table.sample(frac=1, random_state=seed), "d", spec)
        assert split.equals(again[0]) and decisions.equals(again[1])


def test_other_within_a_genus_pools_its_species_that_are_not_classes_with_the_ranks_they_share():
    table = clean_table({"Aa a": 40, "Aa b": 30, "Aa c": 12, "Aa d": 8, "Bb e": 25})
    spec = {
        **SPEC,
        "species": {"within": "Pomacentridae", "top": 2},
        "other": {"within": "Aa", "label": "other", "size": 16},
    }
    split, decisions, choice = split_dataset(table, "d", spec)
    assert sorted(set(split["label"])) == ["Aa a", "Aa b", "other"]
    others = split[split["label"] == "other"]
    assert set(others["taxon"]) <= {"Aa c", "Aa d"} and len(others) == 16
    # The pooled label's ranks are those its species share: the genus and above.
    assert (others[HIGHER_RANKS] == pd.Series(AMPHIPRION | {"genus": "Aa"})).all().all()
    # A species of the family outside the pool's genus is left out, saying why.
    assert left_out(decisions) == {"Bb e": "not in the top 2 within Pomacentridae (25 kept photos)"}
    assert (decisions[decisions["decision"] == "unused"]["taxon"].isin(["Aa c", "Aa d"])).all()
    counts = count_table(split, decisions, choice).set_index("label")
    assert counts.loc["other", "chosen"] == "pool of 2 species"
    assert counts.loc["total", "chosen"] == "2 species as classes, 2 pooled, 1 left out"
    # A pool across genera shares the family only.
    spec["other"] = {"within": "Pomacentridae", "label": "other", "size": 16}
    split, _ = make_split(table, "d", spec)
    others = split[split["label"] == "other"]
    assert set(others["genus"]) == {""} and set(others["family"]) == {"Pomacentridae"}


def test_every_image_of_the_considered_species_is_in_the_split_or_a_decision_once():
    table = clean_table({"Aa a": 40, "Aa b": 30, "Aa c": 12, "Aa d": 8})
    # Occurrences of two and three photos.
    table.loc[0:1, "group"] = table.loc[0, "sha256"]
    table.loc[40:42, "group"] = table.loc[40, "sha256"]
    spec = {**SPEC, "species": {"within": "Aa", "top": 2}, "other": {"label": "x", "size": 5}, "max_per_occurrence": 1}
    split, decisions = make_split(table, "d", spec)
    assert not set(split["sha256"]) & set(decisions["sha256"])
    assert set(split["sha256"]) | set(decisions["sha256"]) == set(table["sha256"])
    assert decisions["sha256"].is_unique
    assert (decisions["decision"] == "capped per occurrence").sum() == 3


def test_a_rule_that_finds_nothing_names_what_to_fix():
    table = clean_table({"Aa a": 10, "Aa b": 5})
    with pytest.raises(ValueError, match=r"datasets\.d\.species\.within: no kept photo of a species has 'Zz'"):
        make_split(table, "d", {**SPEC, "species": {"within": "Zz", "top": 2}})
    with pytest.raises(ValueError, match=r"datasets\.d\.species\.min_images: no species within Aa has 50 kept"):
        make_split(table, "d", {**SPEC, "species": {"within": "Aa", "min_images": 50}})
    with pytest.raises(ValueError, match=r"datasets\.d\.other\.species: Aa a chosen as classes"):
        make_split(
            table,
            "d",
            {**SPEC, "species": {"within": "Aa", "top": 1}, "other": {"label": "o", "size": 1, "species": ["Aa a"]}},
        )


def test_a_given_split_asks_for_val_fraction_only_where_a_photo_has_no_role():
    table = clean_table({"Aa a": 10, "Aa b": 10}).assign(source_split="train", near_duplicate_cluster="")
    table.loc[[8, 9, 18, 19], "source_split"] = "val"
    spec = {"species": ["Aa a", "Aa b"], "cap_ratio": 2, "seed": 1, "use_source_split": True}
    split, _ = make_split(table, "d", spec)
    assert split.groupby("split").size().to_dict() == {"train": 16, "val": 4}
    table.loc[3, "source_split"] = ""
    with pytest.raises(ValueError, match=r"datasets\.d\.val_fraction is needed: 1 photo\(s\) labelled Aa a"):
        make_split(table, "d", spec)


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def config_problems(config) -> str:
    with pytest.raises(ConfigError) as error:
        validate(config, root=REPO)
    return str(error.value)


def test_the_configuration_takes_a_rule_and_refuses_a_bad_one(demo):
    name = next(iter(demo["datasets"]))
    config = copy.deepcopy(demo)
    config["datasets"][name]["species"] = {"within": "Amphiprion", "top": 4}
    config["datasets"][name]["other"] = {"within": "Amphiprion", "label": "other", "size": 10}
    validate(config, root=REPO)
    config["datasets"][name]["species"] = {"within": "Amphiprion", "best": 4}
    assert f"datasets.{name}.species: Additional properties are not allowed ('best'" in config_problems(config)
    config["datasets"][name]["species"] = {"within": "Amphiprion", "min_images": 20}
    config["datasets"][name]["other"]["species"] = ["Amphiprion clarkii"]
    assert f"datasets.{name}.other: give either species (a list) or within (a taxon), not both" in config_problems(
        config
    )


def test_val_fraction_may_be_left_out_only_with_use_source_split(demo):
    name = next(iter(demo["datasets"]))
    config = copy.deepcopy(demo)
    del config["datasets"][name]["val_fraction"]
    config["datasets"][name].pop("test_sources", None)
    config["datasets"][name].pop("test_fraction", None)
    assert f"datasets.{name}: 'val_fraction' is a required property" in config_problems(config)
    config["datasets"][name]["use_source_split"] = True
    validate(config, root=REPO)


def test_code_that_reads_a_datasets_species_copes_with_a_rule(demo):
    rule = {"species": {"within": "Amphiprion", "top": 4}, "other": {"within": "Amphiprion", "label": "o", "size": 1}}
    assert explicit_species(rule) is None and explicit_species(rule["other"]) is None
    assert explicit_species({"species": ["A b"]}) == ["A b"]
    demo["datasets"] = {"d": {**SPEC, **rule}}
    table = pd.DataFrame({"taxon": ["Amphiprion ocellaris", ""]})
    assert species_of_config(demo, table) == ["Amphiprion ocellaris"]


def test_the_split_stage_writes_the_choice_into_its_counts_and_the_ranks_into_its_split(tmp_path):
    table = clean_table({"Aa a": 30, "Aa b": 20, "Aa c": 10})
    write_table(table, tmp_path / "clean.tsv", CLEAN_COLUMNS)
    spec = {**SPEC, "species": {"within": "Aa", "top": 2}, "other": {"within": "Aa", "label": "other", "size": 5}}
    paths = {key: tmp_path / f"d.{key}.tsv" for key in ("split", "decisions", "counts", "leaks")}
    run(tmp_path / "clean.tsv", "d", spec, *paths.values(), max_distance=12)
    counts = read_table(paths["counts"]).set_index("label")["chosen"].to_dict()
    assert counts == {
        "Aa a": "within Aa, top 2: #1 (30 kept photos)",
        "Aa b": "within Aa, top 2: #2 (20 kept photos)",
        "other": "pool of 1 species",
        "total": "2 species as classes, 1 pooled, 0 left out",
    }
    split = read_table(paths["split"], SPLIT_COLUMNS)
    assert set(split["genus"]) == {"Aa"} and set(split["family"]) == {"Pomacentridae"}
