import hashlib

import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fishid.split.stage import benchmark_hashes, count_table, draw_groups, leak_pairs, make_split
from fishid.tables import LEAK

SPEC = {"species": ["A a", "B b"], "val_fraction": 0.1, "cap_ratio": 2, "seed": 5}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def clean_table(counts: dict[str, int], group_sizes: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """Kept images per taxon; with group_sizes, consecutive images share a group."""
    rows = []
    for taxon, n in counts.items():
        sizes = (group_sizes or {}).get(taxon, [1] * n)
        assert sum(sizes) == n
        index = 0
        for size in sizes:
            members = [sha(f"{taxon}{index + k}") for k in range(size)]
            index += size
            rows += [
                {"sha256": m, "taxon": taxon, "listed_as": taxon, "kept": "True", "reason": "", "group": min(members)}
                for m in members
            ]
    return pd.DataFrame(rows).assign(derived_path="", sources="gbif")


def test_the_study_rule():
    split, decisions = make_split(clean_table({"A a": 200, "B b": 50, "C c": 30}), "d", SPEC)
    counts = split.groupby(["label", "split"]).size().to_dict()
    # 10 % validation per species; training capped at 2 x the smallest species' (45).
    assert counts == {("A a", "val"): 20, ("A a", "train"): 90, ("B b", "val"): 5, ("B b", "train"): 45}
    assert (decisions["decision"] == "capped").sum() == 90
    assert set(decisions["label"]) == {"A a"}
    assert decisions["reason"].iloc[0] == "training images per label capped at 2 x the smallest label (90)"
    assert not set(decisions["sha256"]) & set(split["sha256"])


def test_other_class_is_drawn_from_the_named_species_only():
    spec = {**SPEC, "other": {"label": "other", "size": 12, "species": ["C c"]}}
    split, decisions = make_split(clean_table({"A a": 40, "B b": 40, "C c": 30, "D d": 30}), "d", spec)
    other = split[split["label"] == "other"]
    assert len(other) == 12 and set(other["taxon"]) == {"C c"}
    assert (decisions["decision"] == "unused").sum() == 18


def test_excluding_a_photo_moves_no_other_photo():
    """A training photo (and a photo drawn into "other") left out where the drawn counts stay the
    same: every other photo keeps its role and its class (a capped label takes one capped photo
    in); a validation photo left out: one training photo takes its place, and only that one
    moves."""
    spec = {
        **SPEC,
        "val_fraction": 0.2,
        "test_fraction": 0.1,
        "other": {"label": "other", "size": 12, "species": ["C c"]},
    }
    clean = clean_table({"A a": 41, "B b": 30, "C c": 30})
    split, decisions = make_split(clean, "d", spec)
    roles = dict(zip(split["sha256"], split["split"]))

    def without(photo):
        kept = clean.assign(kept=clean["kept"].where(clean["sha256"] != photo, "False"))
        after, after_decisions = make_split(kept, "d", spec)
        return dict(zip(after["sha256"], after["split"])), after_decisions

    # 41 photos of A a and 40 of them: 8 validation and 4 test either way.
    trained = split.loc[(split["label"] == "A a") & (split["split"] == "train"), "sha256"].iloc[0]
    after, after_decisions = without(trained)
    assert {k: v for k, v in after.items() if k in roles} == {k: v for k, v in roles.items() if k != trained}
    # A a is capped (at 2 x other's 9 training photos): one capped photo takes the free place.
    capped = set(decisions.loc[decisions["decision"] == "capped", "sha256"])
    (joined,) = set(after) - set(roles)
    assert joined in capped and after[joined] == "train"
    assert set(after_decisions.loc[after_decisions["decision"] == "capped", "sha256"]) == capped - {joined}
    drawn = split.loc[(split["label"] == "other") & (split["split"] == "train"), "sha256"].iloc[0]
    after, _ = without(drawn)
    assert {k: v for k, v in after.items() if k in roles} == {k: v for k, v in roles.items() if k != drawn}
    (joined,) = set(after) - set(roles)
    assert after[joined] == "train"
    # A held-out photo left out: one photo drawn for training (here a capped one) is held out
    # in its place, and the training photos stay.
    validated = split.loc[(split["label"] == "A a") & (split["split"] == "val"), "sha256"].iloc[0]
    after, _ = without(validated)
    held = {k for k, v in roles.items() if v != "train" and k != validated}
    (moved,) = {k for k, v in after.items() if v != "train"} - held
    assert roles.get(moved, "train") == "train" and held <= set(after)
    assert {k for k, v in after.items() if v == "train"} == {k for k, v in roles.items() if v == "train"} - {moved}


def test_missing_species_too_small_other_and_no_training_image_are_named():
    with pytest.raises(ValueError, match="dataset d: no kept image of B b"):
        make_split(clean_table({"A a": 10}), "d", SPEC)
    spec = {**SPEC, "other": {"label": "other", "size": 50, "species": ["C c"]}}
    with pytest.raises(ValueError, match="other.size is 50 but only 30 images of C c are kept"):
        make_split(clean_table({"A a": 10, "B b": 10, "C c": 30}), "d", spec)
    with pytest.raises(ValueError, match="label B b has 1 image.s. in 1 group.s., none left for training"):
        make_split(clean_table({"A a": 10, "B b": 1}), "d", SPEC)


def test_images_dropped_in_cleaning_never_enter_a_split_and_say_why():
    table = clean_table({"A a": 30, "B b": 30, "C c": 5})
    table.loc[:4, "kept"] = "False"
    table.loc[:4, "reason"] = "too small: 20x20 < 48"
    table.loc[50:, "kept"] = "False"  # 10 of B b and every C c
    table.loc[50:, "reason"] = "label conflict: same photo listed as B b and C c"
    table.loc[50:, "listed_as"] = "B b|C c"
    split, decisions = make_split(table, "d", SPEC)
    assert not set(table.loc[table["kept"] == "False", "sha256"]) & set(split["sha256"])
    dropped = decisions[decisions["decision"] == "dropped in cleaning"]
    assert len(dropped) == 5 + 10 + 5  # C c is listed with B b, a species of the dataset
    assert set(dropped["reason"]) == {"too small: 20x20 < 48", "label conflict: same photo listed as B b and C c"}


def test_test_role_and_count_table():
    spec = {**SPEC, "test_fraction": 0.2}
    split, decisions = make_split(clean_table({"A a": 50, "B b": 40}), "d", spec)
    counts = count_table(split, decisions).set_index("label")
    assert counts.loc["A a", ["train", "val", "test"]].tolist() == [35, 5, 10]
    assert counts.loc["total", "total"] == len(split)
    assert counts["capped"].tolist() == [0, 0, 0]


def test_groups_stay_together():
    sizes = {"A a": [5, 1, 1, 3, 1, 1, 1, 2, 4, 1, 1, 1, 2, 1, 1], "B b": [1] * 20}
    split, _ = make_split(clean_table({"A a": 26, "B b": 20}, sizes), "d", {**SPEC, "test_fraction": 0.2})
    assert (split.groupby("group")["split"].nunique() == 1).all()


def given_split_table() -> pd.DataFrame:
    """A a: 30 images in train/, 6 in val/; B b: 12 and 4; plus leaks and images without a role."""
    table = clean_table({"A a": 40, "B b": 16})
    roles = ["train"] * 30 + ["val"] * 6 + [""] * 4 + ["train"] * 12 + ["val"] * 4
    table = table.assign(source_split=roles, near_duplicate_cluster=table["sha256"])
    a = table.index[table["taxon"] == "A a"]
    # One occurrence photographed twice, filed once in train/ and once in val/.
    table.loc[[a[0], a[30]], "group"] = table.loc[a[0], "group"]
    # Near duplicates on both sides (cleaning keeps both when keep: all).
    table.loc[[a[1], a[31]], ["group", "near_duplicate_cluster"]] = table.loc[a[1], "sha256"]
    # The same bytes in train/ and val/.
    table.loc[a[2], "source_split"] = "train|val"
    # A photo without a role in the group of a val/ photo follows it.
    table.loc[a[36], "group"] = table.loc[a[32], "group"]
    return table


def test_a_given_split_is_kept_and_its_leaks_are_reported_not_moved():
    table = given_split_table()
    spec = {**SPEC, "use_source_split": True, "cap_ratio": 100}
    split, decisions = make_split(table, "d", spec)
    role = dict(zip(split["sha256"], split["split"]))
    given = table[table["source_split"].isin(["train", "val"])]
    assert all(role[sha] == r for sha, r in zip(given["sha256"], given["source_split"]))
    a = table[table["taxon"] == "A a"]["sha256"].tolist()
    assert role[a[2]] == "val", "the same bytes in train/ and val/ are held out"
    assert role[a[36]] == "val", "an image without a role takes its group's"
    assert {role[sha] for sha in a[37:40]} <= {"train", "val"}
    leaks = decisions[decisions["decision"] == LEAK].set_index("sha256")["reason"]
    assert sorted(leaks.index) == sorted([a[0], a[30], a[1], a[31], a[2]])
    assert "(same occurrence) in train and val, kept in train" in leaks[a[0]]
    assert "(same occurrence) in train and val, kept in val" in leaks[a[30]]
    assert "(near-duplicate cluster) in train and val" in leaks[a[31]]
    assert leaks[a[2]] == "same bytes given as train and val, kept in val"
    # Without the option, the project's own leak-free split is drawn instead.
    drawn, drawn_decisions = make_split(table, "d", {**SPEC, "cap_ratio": 100})
    assert (drawn.groupby("group")["split"].nunique() == 1).all()
    assert LEAK not in set(drawn_decisions["decision"])


def test_a_given_split_is_still_capped():
    split, decisions = make_split(given_split_table(), "d", {**SPEC, "use_source_split": True})
    train = split[split["split"] == "train"].groupby("label").size().to_dict()
    assert train["A a"] == 2 * train["B b"] == 24
    assert (decisions["decision"] == "capped").sum() > 0


def test_draw_groups_takes_what_brings_it_closer():
    assert draw_groups([1] * 10, 3) == [0, 1, 2]
    assert draw_groups([5, 2, 1, 1], 3) == [1, 2]
    assert draw_groups([4], 1) == []  # farther than taking nothing
    assert draw_groups([3, 3, 2], 4) == [0]  # 3 fits; then 2 would overshoot by as much as it is short


group_lists = st.lists(st.integers(1, 4), min_size=2, max_size=30)


def tolerance(group_sizes: list[int]) -> float:
    """How far a role's images may be from its share: within one image when images are
    independent; with groups, within half the largest group (whole groups are drawn)."""
    return max(1, max(group_sizes) / 2 + 0.5)


def room_for_training(n: int, group_sizes: list[int], fractions) -> bool:
    """Whether a label of `n` images keeps one for training even when every role takes the
    most its tolerance allows (computed from the sizes alone, not by the splitter)."""
    most_held_out = sum(int(f * n + tolerance(group_sizes) + 1e-9) for f in fractions if f)
    return n - most_held_out >= 1


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.fixed_dictionaries({"A a": group_lists, "B b": group_lists, "C c": group_lists}),
    singletons=st.booleans(),
    val_fraction=st.sampled_from([0.1, 0.2, 0.3]),
    test_fraction=st.sampled_from([0.0, 0.1]),
    cap_ratio=st.sampled_from([1, 1.5, 2]),
    seed=st.integers(0, 2**16),
    shuffle_seed=st.integers(0, 2**16),
)
def test_split_properties(sizes, singletons, val_fraction, test_fraction, cap_ratio, seed, shuffle_seed):
    if singletons:
        sizes = {taxon: [1] * sum(s) for taxon, s in sizes.items()}
    counts = {taxon: sum(s) for taxon, s in sizes.items()}
    spec = {
        "species": ["A a", "B b", "C c"],
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "cap_ratio": cap_ratio,
        "seed": seed,
    }
    table = clean_table(counts, sizes)
    # Where even the most validation and test may take (checked below) leaves every label a
    # training image, the split must succeed; elsewhere it may stop, and only for that reason.
    feasible = all(room_for_training(n, sizes[label], (val_fraction, test_fraction)) for label, n in counts.items())
    event(f"every label has room for training: {feasible}")
    try:
        split, decisions = make_split(table, "d", spec)
    except ValueError as error:
        assert not feasible, f"the split stopped although every label has room for training: {error}"
        assert "none left for training" in str(error)
        return
    # Deterministic and independent of input order.
    shuffled, shuffled_decisions = make_split(table.sample(frac=1, random_state=shuffle_seed), "d", spec)
    assert split.equals(shuffled) and decisions.equals(shuffled_decisions)
    # No group straddles two roles (capping only removes training images).
    assert (split.groupby("group")["split"].nunique() == 1).all()
    # The cap holds.
    train = split[split["split"] == "train"].groupby("label").size()
    assert train.max() <= cap_ratio * train.min()
    # Validation (and test) per species: within tolerance of the target.
    for label, n in counts.items():
        allowed = tolerance(sizes[label])
        for role, fraction in (("val", val_fraction), ("test", test_fraction)):
            got = ((split["label"] == label) & (split["split"] == role)).sum()
            if fraction:
                assert abs(got - fraction * n) <= allowed, (label, role, got, fraction * n)
            else:
                assert got == 0
    # Every image is either in the split or in the decisions, never both.
    assert set(split["sha256"]) | set(decisions["sha256"]) == set(table["sha256"])
    assert not set(split["sha256"]) & set(decisions["sha256"])


def test_leave_one_source_out_tests_only_on_the_named_source_and_keeps_groups_whole():
    clean = clean_table({"A a": 90, "B b": 60}, {"A a": [3] * 30, "B b": [2] * 30})
    # Sources rotate per image, so many groups hold a FishPix photo beside a GBIF or FishBase one.
    clean["sources"] = [("gbif", "fishbase", "gbif", "fishpix", "gbif|fishpix")[i % 5] for i in range(len(clean))]
    spec = {**SPEC, "val_fraction": 0.1, "test_fraction": 0.2, "test_sources": ["fishpix"]}
    split, _ = make_split(clean, "d", spec)
    from_fishpix = split["sources"].str.contains("fishpix")
    group_has_fishpix = from_fishpix.groupby(split["group"]).transform("any")
    held_out = split["split"] != "train"
    assert (held_out == group_has_fishpix).all()
    assert not from_fishpix[~held_out].any()
    assert (split.groupby("group")["split"].apply(lambda r: set(r) <= {"train"} or "train" not in set(r))).all()
    # Validation and test are both drawn among the held-out photos, a third and two thirds.
    for _, rows in split[held_out].groupby("label"):
        assert 0.2 < (rows["split"] == "val").mean() < 0.45 and (rows["split"] == "test").any()


def _flip(phash: str, bits: list[int]) -> str:
    value = int(phash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:032x}"


def test_the_leak_count_finds_a_near_duplicate_placed_across_train_and_test(tmp_path):
    import numpy as np
    from PIL import Image

    from fishid.clean.near_duplicates import perceptual_hash
    from fishid.clean.stage import decode

    rng = np.random.default_rng(3)
    hashes = [f"{int(rng.integers(0, 2**62)):016x}{int(rng.integers(0, 2**62)):016x}" for _ in range(40)]
    clean = pd.DataFrame({"sha256": [sha(str(i)) for i in range(40)], "phash": hashes})
    split = pd.DataFrame(
        {"dataset": "d", "sha256": clean["sha256"], "split": ["train"] * 30 + ["val"] * 5 + ["test"] * 5}
    )
    assert leak_pairs(split, clean, 12).empty
    # By hand: test photo 35 becomes a near copy of training photo 0 (3 bits apart).
    clean.loc[35, "phash"] = _flip(hashes[0], [1, 70, 120])
    # And a benchmark photo is a copy of training photo 7.
    pixels = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "bench.png")
    clean.loc[7, "phash"] = perceptual_hash(decode(tmp_path / "bench.png"))
    pairs = leak_pairs(split, clean, 12, {"kept-out": benchmark_hashes("kept-out", tmp_path)})
    assert pairs[["held_out", "train_sha256", "held_out_image", "distance"]].values.tolist() == [
        ["benchmark kept-out", sha("7"), "bench.png", 0],
        ["test", sha("0"), sha("35"), 3],
    ]
