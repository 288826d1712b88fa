"""The split stage: the study's rule, per dataset.

Per label, a fraction of the images goes to validation (and optionally to test); the
training images of each label are then capped at `cap_ratio` times the smallest label's.
Images of one group always fall on the same side. Every image left out says why.
"""

import zlib

import numpy as np
import pandas as pd

from fishid.tables import CLEAN_COLUMNS, DECISION_COLUMNS, SPLIT_COLUMNS, read_table, write_table

SPLITS = ("train", "val", "test")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, which would break determinism.
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _shuffled_groups(images: pd.DataFrame, rng) -> list[pd.DataFrame]:
    """Groups in a random order that depends only on their content and the seed."""
    groups = [g for _, g in images.sort_values("sha256").groupby("group", sort=True)]
    return [groups[i] for i in rng.permutation(len(groups))]


def assign_roles(images: pd.DataFrame, val_fraction: float, test_fraction: float, rng) -> pd.Series:
    """Split one label's images into train/val/test, whole groups at a time."""
    targets = {
        role: max(1, round(fraction * len(images))) if fraction > 0 else 0
        for role, fraction in (("val", val_fraction), ("test", test_fraction))
    }
    roles, counts = {}, {"val": 0, "test": 0}
    for group in _shuffled_groups(images, rng):
        role = next((r for r in ("val", "test") if counts[r] < targets[r]), "train")
        if role != "train":
            counts[role] += len(group)
        roles.update(dict.fromkeys(group["sha256"], role))
    return images["sha256"].map(roles)


def sample_other(pool: pd.DataFrame, size: int, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw about `size` images (whole groups) from the pooled remaining species."""
    chosen, total = [], 0
    for group in _shuffled_groups(pool, rng):
        if total >= size:
            break
        chosen.append(group)
        total += len(group)
    picked = pd.concat(chosen) if chosen else pool.iloc[:0]
    return picked, pool[~pool["sha256"].isin(picked["sha256"])]


def make_split(clean: pd.DataFrame, name: str, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (split table, decisions for images left out)."""
    kept = clean[clean["kept"].astype(str) == "True"].copy()
    kept["group"] = kept["sha256"]
    species = spec["species"]
    missing = [s for s in species if s not in set(kept["taxon"])]
    if missing:
        raise ValueError(f"dataset {name}: no kept image of {', '.join(missing)}: check its species list")
    labelled = kept[kept["taxon"].isin(species)].assign(label=lambda t: t["taxon"])
    decisions = []
    other = spec.get("other")
    if other:
        pool_species = other.get("species") or sorted(set(kept["taxon"]) - set(species))
        pool = kept[kept["taxon"].isin(pool_species)]
        picked, unpicked = sample_other(pool, other["size"], _rng(spec["seed"], name, "other"))
        if len(picked) < other["size"]:
            raise ValueError(
                f"dataset {name}: other.size is {other['size']} but only {len(pool)} images "
                f"of {', '.join(pool_species)} are kept"
            )
        labelled = pd.concat([labelled, picked.assign(label=other["label"])])
        decisions.append(unpicked.assign(decision="unused", reason=f"not drawn for '{other['label']}'"))

    parts = []
    for label, images in labelled.groupby("label", sort=True):
        rng = _rng(spec["seed"], name, label)
        images = images.assign(split=assign_roles(images, spec["val_fraction"], spec.get("test_fraction", 0), rng))
        parts.append((images, rng))
    cap = spec["cap_ratio"] * min((images["split"] == "train").sum() for images, _ in parts)

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
    table = pd.concat(rows).assign(dataset=name).sort_values(["label", "split", "sha256"])
    dropped = pd.concat(decisions) if decisions else pd.DataFrame(columns=DECISION_COLUMNS)
    dropped = dropped.assign(dataset=name).sort_values("sha256")
    return table[SPLIT_COLUMNS].reset_index(drop=True), dropped.reindex(columns=DECISION_COLUMNS)


def count_table(split: pd.DataFrame) -> pd.DataFrame:
    """Images per label and split: the study's Table 1."""
    counts = pd.crosstab(split["label"], split["split"]).reindex(columns=list(SPLITS), fill_value=0)
    counts = counts.loc[:, (counts.sum() > 0) | (counts.columns != "test")]
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum()
    return counts.reset_index().rename(columns={"index": "label"})


def run(clean_path, name: str, spec: dict, split_path, decisions_path, counts_path) -> pd.DataFrame:
    clean = read_table(clean_path, CLEAN_COLUMNS)
    table, decisions = make_split(clean, name, spec)
    write_table(table, split_path, SPLIT_COLUMNS)
    write_table(decisions, decisions_path, DECISION_COLUMNS)
    write_table(count_table(table), counts_path)
    return table
