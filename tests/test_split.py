import hashlib

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fishid.split import count_table, make_split

SPEC = {"species": ["A a", "B b"], "val_fraction": 0.1, "cap_ratio": 2, "seed": 5}


def clean_table(counts: dict[str, int]) -> pd.DataFrame:
    rows = [
        {
            "sha256": hashlib.sha256(f"{taxon}{i}".encode()).hexdigest(),
            "taxon": taxon,
            "kept": "True",
            "derived_path": "",
        }
        for taxon, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_the_study_rule():
    split, decisions = make_split(clean_table({"A a": 200, "B b": 50, "C c": 30}), "d", SPEC)
    counts = split.groupby(["label", "split"]).size().to_dict()
    # 10 % validation per species; training capped at 2 x the smallest species' (45).
    assert counts == {("A a", "val"): 20, ("A a", "train"): 90, ("B b", "val"): 5, ("B b", "train"): 45}
    assert (decisions["decision"] == "capped").sum() == 90
    assert decisions["reason"].iloc[0] == "training images per label capped at 2 x the smallest label (90)"
    assert not set(decisions["sha256"]) & set(split["sha256"])


def test_other_class_is_drawn_from_the_named_species_only():
    spec = {**SPEC, "other": {"label": "other", "size": 12, "species": ["C c"]}}
    split, decisions = make_split(clean_table({"A a": 40, "B b": 40, "C c": 30, "D d": 30}), "d", spec)
    other = split[split["label"] == "other"]
    assert len(other) == 12 and set(other["taxon"]) == {"C c"}
    assert (decisions["decision"] == "unused").sum() == 18


def test_missing_species_and_too_small_other_are_named():
    with pytest.raises(ValueError, match="dataset d: no kept image of B b"):
        make_split(clean_table({"A a": 10}), "d", SPEC)
    spec = {**SPEC, "other": {"label": "other", "size": 50, "species": ["C c"]}}
    with pytest.raises(ValueError, match="other.size is 50 but only 30 images of C c are kept"):
        make_split(clean_table({"A a": 10, "B b": 10, "C c": 30}), "d", spec)


def test_dropped_images_never_enter_a_split():
    table = clean_table({"A a": 30, "B b": 30})
    table.loc[:4, "kept"] = "False"
    split, _ = make_split(table, "d", SPEC)
    assert not set(table["sha256"][:5]) & set(split["sha256"])


def test_test_role_and_count_table():
    spec = {**SPEC, "test_fraction": 0.2}
    split, _ = make_split(clean_table({"A a": 50, "B b": 40}), "d", spec)
    counts = count_table(split).set_index("label")
    assert counts.loc["A a", ["train", "val", "test"]].tolist() == [35, 5, 10]
    assert counts.loc["total", "total"] == len(split)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.dictionaries(st.sampled_from(["A a", "B b", "C c"]), st.integers(2, 60), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
    shuffle_seed=st.integers(0, 2**16),
)
def test_split_is_deterministic_capped_and_order_independent(counts, seed, shuffle_seed):
    spec = {**SPEC, "species": ["A a", "B b", "C c"], "seed": seed}
    table = clean_table(counts)
    split, _ = make_split(table, "d", spec)
    shuffled, _ = make_split(table.sample(frac=1, random_state=shuffle_seed), "d", spec)
    assert split.equals(shuffled)
    train = split[split["split"] == "train"].groupby("label").size()
    assert train.max() <= 2 * train.min()
    for label, n in counts.items():
        val = ((split["label"] == label) & (split["split"] == "val")).sum()
        assert abs(val - 0.1 * n) <= 1
