"""The split stage: the study's rule, per dataset, without leaks.

Per label, a fraction of the images goes to validation (model selection) and optionally
a fraction to test (the reported numbers only); the training images of each label are
then capped at `cap_ratio` times the smallest label's. Whole groups (from the clean
table: one occurrence, one near-duplicate cluster) are drawn at a time, so no group
straddles two roles. Every image of the dataset's species that is not in the split says
why: dropped in cleaning, capped, or not drawn for the pooled "other" class.

With `use_source_split`, the roles a source gave (a folder's train/ val/ test/) are kept
instead of drawn, so that a published split and its numbers can be compared; images without
one take their group's, or are drawn as above. Capping still applies to training. Groups
that the given split cuts are not moved: they are reported, in the decisions table, as leaks.
"""

import zlib

import numpy as np
import pandas as pd

from fishid.tables import CLEAN_COLUMNS, DECISION_COLUMNS, LEAK, SPLIT_COLUMNS, read_table, write_table

SPLITS = ("train", "val", "test")
# An image given several roles (the same bytes filed under train/ and val/) is held out.
HELD_OUT_FIRST = ("test", "val", "train")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, which would break determinism.
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _shuffled_groups(images: pd.DataFrame, rng) -> list[np.ndarray]:
    """Each group's row positions in `images` (in SHA-256 order), the groups in a random
    order that depends only on their content and the seed."""
    by_sha = np.argsort(images["sha256"].to_numpy(), kind="stable")
    codes = pd.factorize(images["group"].to_numpy()[by_sha], sort=True)[0]
    order = np.argsort(codes, kind="stable")
    groups = np.split(by_sha[order], np.flatnonzero(np.diff(codes[order])) + 1)
    return [groups[i] for i in rng.permutation(len(groups))]


def draw_groups(sizes: list[int], target: int) -> list[int]:
    """Indices of groups (taken in the given order) whose sizes add up close to target.

    First every group that still fits is taken; then, if short, the first group that
    brings the total closer. With single-image groups the total is the target exactly;
    otherwise it is off by at most half the largest group.
    """
    chosen, total = np.zeros(len(sizes), bool), 0
    for index, size in enumerate(sizes):
        if total + size <= target:
            chosen[index] = True
            total += size
    for index, size in enumerate(sizes):
        if not chosen[index] and abs(total + size - target) < abs(total - target):
            chosen[index] = True
            total += size
    return np.flatnonzero(chosen).tolist()


def assign_roles(images: pd.DataFrame, val_fraction: float, test_fraction: float, rng) -> pd.Series:
    """Split one label's images into train/val/test, whole groups at a time."""
    groups = _shuffled_groups(images, rng)
    roles = np.full(len(images), "train", dtype=object)
    for role, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction <= 0:
            continue
        left = [g for g in groups if roles[g[0]] == "train"]
        target = max(1, round(fraction * len(images)))
        for index in draw_groups([len(g) for g in left], target):
            roles[left[index]] = role
    return pd.Series(roles, index=images.index)


def first_given_role(given: str) -> str:
    roles = given.split("|")
    return next((role for role in HELD_OUT_FIRST if role in roles), "")


def given_roles(images: pd.DataFrame, val_fraction: float, test_fraction: float, rng) -> pd.Series:
    """The roles the source gave; an image without one takes its group's, and groups with
    none are drawn as assign_roles does."""
    roles = images["source_split"].map(first_given_role)
    by_group = roles[roles != ""].groupby(images["group"]).agg(lambda r: min(r, key=HELD_OUT_FIRST.index))
    roles = roles.where(roles != "", images["group"].map(by_group).fillna(""))
    unassigned = roles == ""
    if unassigned.any():
        roles[unassigned] = assign_roles(images[unassigned], val_fraction, test_fraction, rng)
    return roles


def leaks(table: pd.DataFrame) -> pd.DataFrame:
    """Images of a group that the split cuts, or given several roles (the same bytes filed
    twice), with a reason naming the link and the roles: the split is not changed."""
    group_roles = table.groupby("group")["split"].agg(lambda r: " and ".join(sorted(set(r), key=SPLITS.index)))
    roles = table["group"].map(group_roles)
    cluster_cut = table["near_duplicate_cluster"].map(table.groupby("near_duplicate_cluster")["split"].nunique()) > 1
    link = pd.Series("same occurrence", index=table.index).where(~cluster_cut, "near-duplicate cluster")
    twice = table["source_split"].str.contains("|", regex=False)
    reason = ("group " + table["group"] + " (" + link + ") in " + roles).where(
        ~twice, "same bytes given as " + table["source_split"].str.replace("|", " and ", regex=False)
    )
    found = table.assign(decision=LEAK, reason=reason + ", kept in " + table["split"])
    return found[roles.str.contains(" and ") | twice]


def sample_other(pool: pd.DataFrame, size: int, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw about `size` images (whole groups) from the pooled remaining species."""
    groups = _shuffled_groups(pool, rng)
    chosen = draw_groups([len(g) for g in groups], size)
    picked = pool.iloc[np.concatenate([groups[i] for i in chosen])] if chosen else pool.iloc[:0]
    return picked, pool[~pool["sha256"].isin(picked["sha256"])]


def _check_groups(labelled: pd.DataFrame, name: str) -> None:
    """Cleaning gives every group one species; a group under two labels would leak."""
    labels_per_group = labelled.groupby("group")["label"].nunique()
    mixed = labels_per_group[labels_per_group > 1]
    if len(mixed):
        raise ValueError(
            f"dataset {name}: {len(mixed)} group(s) hold images of several labels (first: {mixed.index[0]}); "
            "the clean table should have resolved them as label conflicts: rerun the clean stage"
        )


def make_split(clean: pd.DataFrame, name: str, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (split table, decisions for images of the dataset's species left out)."""
    is_kept = clean["kept"].astype(str) == "True"
    kept = clean[is_kept].copy()
    species = spec["species"]
    missing = [s for s in species if s not in set(kept["taxon"])]
    if missing:
        raise ValueError(f"dataset {name}: no kept image of {', '.join(missing)}: check its species list")
    labelled = kept[kept["taxon"].isin(species)].assign(label=lambda t: t["taxon"])
    decisions = []
    other = spec.get("other")
    considered = set(species)
    if other:
        pool_species = other.get("species") or sorted(set(kept["taxon"]) - set(species))
        considered |= set(pool_species)
        pool = kept[kept["taxon"].isin(pool_species)]
        if len(pool) < other["size"]:
            raise ValueError(
                f"dataset {name}: other.size is {other['size']} but only {len(pool)} images "
                f"of {', '.join(pool_species)} are kept"
            )
        picked, unpicked = sample_other(pool, other["size"], _rng(spec["seed"], name, "other"))
        labelled = pd.concat([labelled, picked.assign(label=other["label"])])
        decisions.append(unpicked.assign(decision="unused", reason=f"not drawn for '{other['label']}'"))
    _check_groups(labelled, name)

    parts = []
    for label, images in labelled.groupby("label", sort=True):
        rng = _rng(spec["seed"], name, label)
        draw = given_roles if spec.get("use_source_split") else assign_roles
        images = images.assign(split=draw(images, spec["val_fraction"], spec.get("test_fraction", 0), rng))
        if not (images["split"] == "train").any():
            raise ValueError(
                f"dataset {name}: label {label} has {len(images)} image(s) in {images['group'].nunique()} group(s), "
                "none left for training after validation and test: add images or lower the fractions"
            )
        parts.append((images, rng))
    cap = int(spec["cap_ratio"] * min((images["split"] == "train").sum() for images, _ in parts))

    rows = []
    for images, rng in parts:
        train = images[images["split"] == "train"].sort_values("sha256")
        if len(train) > cap:
            dropped = train.iloc[rng.permutation(len(train))[: len(train) - cap]]
            decisions.append(
                dropped.assign(
                    decision="capped",
                    reason=f"training images per label capped at {spec['cap_ratio']} x the smallest label ({cap})",
                )
            )
            images = images[~images["sha256"].isin(dropped["sha256"])]
        rows.append(images)
    cleaned_out = clean[~is_kept & clean["listed_as"].str.split("|").apply(lambda t: bool(set(t) & considered))]
    decisions.append(cleaned_out.assign(decision="dropped in cleaning"))
    table = pd.concat(rows).assign(dataset=name).sort_values(["label", "split", "sha256"])
    if spec.get("use_source_split"):
        decisions.append(leaks(table))
    dropped = pd.concat(decisions).assign(dataset=name)
    dropped["taxon"] = dropped["taxon"].where(dropped["taxon"] != "", dropped["listed_as"])
    dropped = dropped.sort_values(["decision", "sha256"])
    return table[SPLIT_COLUMNS].reset_index(drop=True), dropped.reindex(columns=DECISION_COLUMNS).reset_index(drop=True)


def count_table(split: pd.DataFrame, decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Images per label and split (the study's Table 1), and per label those capped."""
    counts = pd.crosstab(split["label"], split["split"]).reindex(columns=list(SPLITS), fill_value=0)
    counts = counts.loc[:, (counts.sum() > 0) | (counts.columns != "test")]
    counts["total"] = counts.sum(axis=1)
    if decisions is not None:
        capped = decisions[decisions["decision"] == "capped"]
        counts["capped"] = capped.groupby("label").size().reindex(counts.index, fill_value=0)
    counts.loc["total"] = counts.sum()
    return counts.reset_index().rename(columns={"index": "label"})


def run(clean_path, name: str, spec: dict, split_path, decisions_path, counts_path) -> pd.DataFrame:
    clean = read_table(clean_path, CLEAN_COLUMNS)
    table, decisions = make_split(clean, name, spec)
    write_table(table, split_path, SPLIT_COLUMNS)
    write_table(decisions, decisions_path, DECISION_COLUMNS)
    write_table(count_table(table, decisions), counts_path)
    return table
