"""The split stage: the study's rule, per dataset, without leaks.

Per label, a fraction of the images goes to validation (model selection) and optionally
a fraction to test (the reported numbers only); the training images of each label are
then capped at `cap_ratio` times the smallest label's. Whole groups (from the clean
table: one occurrence, one near-duplicate cluster) are drawn at a time, so no group
straddles two roles. Every image of the dataset's species that is not in the split says
why: dropped in cleaning, capped, or not drawn for the pooled "other" class.

A dataset's species are a list, or a rule on the kept photos: `{within: <taxon at any rank>,
top: N, min_images: M}` chooses the species within that taxon with at least M kept photos,
the N with the most (ties go by name); `other: {within: X}` pools the species within X that
are not classes. `max_per_occurrence` first keeps at most that many photos per group (one
occurrence, with any occurrence that shares a photo or a near duplicate with it), the
largest; the choice counts what is left. The counts table says why each label was chosen,
the decisions table why each species within the taxon that is not a class was left out.

With `test_sources` (leave sources out), the images of groups that any photo of a named
source is in are held out, validation and test drawn among them in the ratio of the two
fractions, and the others train: a model is tested on sources it never trained on.

With `use_source_split`, the roles a source gave (a folder's train/ val/ test/) are kept
instead of drawn, so that a published split and its numbers can be compared; images without
one take their group's, or are drawn as above. Capping still applies to training. Groups
that the given split cuts are not moved: they are reported, in the decisions table, as leaks.

Whatever the split, the leaks table lists every pair of a training image and a held-out
image (or a photo of a benchmark folder the user keeps out of training) whose perceptual
hashes are within the near-duplicate distance: after grouping there should be none.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fishid import steps
from fishid.clean import near_duplicates
from fishid.clean.decode import decode
from fishid.config import explicit_species
from fishid.download.store import MAX_PIXELS
from fishid.sources.folder import image_files
from fishid.split.scope import with_ranks, within
from fishid.tables import (
    CLEAN_COLUMNS_WITHOUT_MEASURES,
    DECISION_COLUMNS,
    HIGHER_RANKS,
    LEAK,
    SPLIT_COLUMNS,
    read_table,
    readable,
    write_table,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NOT_CHOSEN = "not chosen"
CAPPED_PER_OCCURRENCE = "capped per occurrence"
# An image given several roles (the same bytes filed under train/ and val/) is held out.
HELD_OUT_FIRST = ("test", "val", "train")


def _draw_key(seed: int, *keys: str) -> str:
    return ":".join([str(seed), *keys])


def seeded_ranks(key: str, values) -> list[str]:
    """Each value's place in a seeded order: the SHA-256 of the key and the value. A value
    leaving or joining moves no other (a random permutation of positions would reorder all:
    excluding one photo would move others between training and validation, and the detector
    that learns from the training photos would be trained again)."""
    return [hashlib.sha256(f"{key}:{value}".encode()).hexdigest() for value in values]


def _shuffled_groups(images: pd.DataFrame, key: str) -> list[np.ndarray]:
    """Each group's row positions in `images` (in SHA-256 order), the groups in a seeded order
    that depends only on each group and the key (seeded_ranks)."""
    by_sha = np.argsort(images["sha256"].to_numpy(), kind="stable")
    codes, names = pd.factorize(images["group"].to_numpy()[by_sha], sort=True)
    order = np.argsort(codes, kind="stable")
    groups = np.split(by_sha[order], np.flatnonzero(np.diff(codes[order])) + 1)
    return [groups[i] for i in np.argsort(seeded_ranks(key, names), kind="stable")]


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


def assign_roles(images: pd.DataFrame, val_fraction: float, test_fraction: float, key: str) -> pd.Series:
    """Split one label's images into train/val/test, whole groups at a time."""
    groups = _shuffled_groups(images, key)
    roles = np.full(len(images), "train", dtype=object)
    for role, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction <= 0:
            continue
        left = [g for g in groups if roles[g[0]] == "train"]
        target = max(1, round(fraction * len(images)))
        for index in draw_groups([len(g) for g in left], target):
            roles[left[index]] = role
    return pd.Series(roles, index=images.index)


def source_roles(images: pd.DataFrame, test_sources, val_fraction: float, test_fraction: float, key: str) -> pd.Series:
    """Leave sources out: a group with any image from `test_sources` is held out whole (so
    no group crosses the line), drawn into val and test in the ratio of the two fractions;
    every other group trains."""
    from_test_source = images["sources"].str.split("|").map(lambda listed: not set(listed).isdisjoint(test_sources))
    held_out = from_test_source.groupby(images["group"]).transform("any")
    roles = pd.Series("train", index=images.index, dtype=object)
    if held_out.any():
        val_share = val_fraction / (val_fraction + test_fraction)
        drawn = assign_roles(images[held_out], val_share, 1 - val_share, key)
        # What the draw left over (groups too big to fit either target) is still a test source's.
        roles[held_out] = drawn.where(drawn != "train", "test")
    return roles


def first_given_role(given: str) -> str:
    roles = given.split("|")
    return next((role for role in HELD_OUT_FIRST if role in roles), "")


def given_roles(
    images: pd.DataFrame, val_fraction: float | None, test_fraction: float, key: str, where=""
) -> pd.Series:
    """The roles the source gave; an image without one takes its group's, and groups with
    none are drawn as assign_roles does. `val_fraction` may be None where every image has a
    role: it is asked for (naming `where`, the dataset's key) only when one must be drawn."""
    roles = images["source_split"].map(first_given_role)
    by_group = roles[roles != ""].groupby(images["group"]).agg(lambda r: min(r, key=HELD_OUT_FIRST.index))
    roles = roles.where(roles != "", images["group"].map(by_group).fillna(""))
    unassigned = roles == ""
    if unassigned.any():
        if val_fraction is None:
            raise ValueError(
                f"{where}.val_fraction is needed: {unassigned.sum()} photo(s) labelled {images['label'].iloc[0]} came "
                "without a role (train/, val/, test/) and share no group with one, so they are drawn; give "
                f"{where}.val_fraction (and test_fraction) for them"
            )
        roles[unassigned] = assign_roles(images[unassigned], val_fraction, test_fraction, key)
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


def sample_other(pool: pd.DataFrame, size: int, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw about `size` images (whole groups) from the pooled remaining species."""
    groups = _shuffled_groups(pool, key)
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


def cap_per_occurrence(kept: pd.DataFrame, most: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, capped): at most `most` images per group (one occurrence, with the occurrences
    that share a photo or a near duplicate with it: the clean table cannot tell them apart),
    the largest kept, ties by SHA-256, so that reruns keep the same ones."""
    width, height = (pd.to_numeric(kept[side], errors="coerce").fillna(0).to_numpy() for side in ("width", "height"))
    ranked = pd.DataFrame(
        {"group": kept["group"].to_numpy(), "pixels": -width * height, "sha256": kept["sha256"].to_numpy()}
    ).sort_values(["group", "pixels", "sha256"])
    over = np.zeros(len(kept), bool)
    over[ranked.index[ranked.groupby("group").cumcount() >= most]] = True
    capped = kept[over]
    reason = (
        f"at most {most} photo(s) per occurrence (max_per_occurrence): group " + capped["group"] + " keeps its largest"
    )
    return kept[~over], capped.assign(decision=CAPPED_PER_OCCURRENCE, reason=reason)


def _photo_noun(spec: dict) -> str:
    most = spec.get("max_per_occurrence")
    return f"kept photos, at most {most} per occurrence" if most else "kept photos"


def rule_choice(photos: pd.Series, rule: dict, noun: str) -> pd.DataFrame:
    """(taxon, photos, chosen, reason) of each species of `photos` (its images per species
    within the rule's taxon): those with at least min_images, of them the `top` with the
    most, ties by name, so that a rerun on the same counts chooses the same species."""
    ranked = photos.rename_axis("taxon").reset_index(name="photos")
    ranked = ranked.sort_values(["photos", "taxon"], ascending=[False, True], ignore_index=True)
    taxon, top, least = rule["within"], rule.get("top"), rule.get("min_images", 0)
    enough = ranked["photos"] >= least
    place = enough.cumsum()
    chosen = enough & (place <= top) if top else enough
    last_chosen = ranked.loc[chosen, "photos"].min() if chosen.any() else None
    reasons = []
    for n, is_enough, at, is_chosen in zip(ranked["photos"], enough, place, chosen):
        counted = f"{n} {noun}"
        if is_chosen:
            reasons.append(f"within {taxon}" + (f", top {top}: #{at}" if top else "") + f" ({counted})")
        elif not is_enough:
            reasons.append(f"below min_images {least} within {taxon} ({counted})")
        else:
            tie = f"; as many as #{top}, ties go by name" if n == last_chosen else ""
            reasons.append(f"not in the top {top} within {taxon} ({counted}{tie})")
    return ranked.assign(chosen=chosen, reason=reasons)


def _classes(kept: pd.DataFrame, name: str, spec: dict, photos: pd.Series) -> pd.DataFrame:
    """(taxon, photos, chosen, reason) of the listed species, or of every species within a
    rule's taxon, chosen or left out."""
    species = explicit_species(spec)
    if species is not None:
        missing = [s for s in species if s not in photos.index]
        if missing:
            raise ValueError(f"dataset {name}: no kept image of {', '.join(missing)}: check its species list")
        return pd.DataFrame(
            {"taxon": species, "photos": photos[species].to_numpy(), "chosen": True, "reason": "listed"}
        )
    rule = spec["species"]
    candidates = kept[within(kept, rule["within"])]
    if candidates.empty:
        raise ValueError(
            f"datasets.{name}.species.within: no kept photo of a species has {rule['within']!r} at any rank "
            f"({', '.join(HIGHER_RANKS)}); check the name against the clean table's rank columns"
        )
    choice = rule_choice(photos[sorted(set(candidates["taxon"]))], rule, _photo_noun(spec))
    if not choice["chosen"].any():
        best = choice.iloc[0]
        raise ValueError(
            f"datasets.{name}.species.min_images: no species within {rule['within']} has {rule['min_images']} "
            f"kept photos (the most: {best['photos']}, {best['taxon']}); lower min_images"
        )
    return choice


def _pool(kept: pd.DataFrame, name: str, other: dict, classes: set[str]) -> list[str]:
    """The species the "other" label pools: listed, within a taxon, or every other one kept."""
    if "species" in other:
        chosen = sorted(classes & set(other["species"]))
        if chosen:
            raise ValueError(
                f"datasets.{name}.other.species: {', '.join(chosen)} chosen as classes by datasets.{name}.species; "
                "a species is either a class or part of the other pool"
            )
        return other["species"]
    taxa = kept.loc[within(kept, other["within"]), "taxon"] if "within" in other else kept["taxon"]
    return sorted(set(taxa) - classes)


def species_choice(kept: pd.DataFrame, name: str, spec: dict) -> pd.DataFrame:
    """Per species considered (taxon, photos, label, reason): a class (label: itself), pooled
    into "other" (label: other's), or left out (label empty), and why."""
    photos = kept.groupby("taxon").size()
    choice = _classes(kept, name, spec, photos)
    choice["label"] = choice["taxon"].where(choice["chosen"], "")
    other = spec.get("other")
    if other:
        classes = set(choice.loc[choice["chosen"], "taxon"])
        if other["label"] in classes:
            raise ValueError(
                f"datasets.{name}.other.label: {other['label']!r} is one of the dataset's classes; "
                "the other pool would merge into it (name it, for example, 'other')"
            )
        pool = _pool(kept, name, other, classes)
        pooled = pd.DataFrame(
            {
                "taxon": pool,
                "photos": photos.reindex(pool, fill_value=0).to_numpy(),
                "label": other["label"],
                "reason": f"pooled as {other['label']!r}",
            }
        )
        choice = pd.concat([choice[~choice["taxon"].isin(pool)], pooled], ignore_index=True)
    return choice[["taxon", "photos", "label", "reason"]]


def shared_ranks(images: pd.DataFrame) -> dict[str, str]:
    """The ranks every image agrees on (all Amphiprion: that genus and the ranks above); a
    rank they differ on, or one that any leaves empty, is empty."""
    return {rank: values[0] if len(values := images[rank].unique()) == 1 else "" for rank in HIGHER_RANKS}


def usable_images(clean: pd.DataFrame, name: str, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(the kept images the dataset may use, those capped per occurrence, species_choice on
    the former): the species are chosen on what training could use."""
    kept = with_ranks(clean[clean["kept"].astype(str) == "True"])
    capped = kept.iloc[:0]
    if spec.get("max_per_occurrence"):
        kept, capped = cap_per_occurrence(kept, spec["max_per_occurrence"])
    return kept, capped, species_choice(kept, name, spec)


def make_split(clean: pd.DataFrame, name: str, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (split table, decisions for images of the dataset's species left out)."""
    table, decisions, _ = split_dataset(clean, name, spec)
    return table, decisions


def split_dataset(clean: pd.DataFrame, name: str, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(split table, decisions for images of the dataset's species left out, species_choice)."""
    is_kept = clean["kept"].astype(str) == "True"
    kept, capped, choice = usable_images(clean, name, spec)
    considered = set(choice["taxon"])
    label_of = dict(zip(choice["taxon"], choice["label"]))
    left_out = kept[kept["taxon"].map(label_of) == ""]
    why = dict(zip(choice["taxon"], choice["reason"]))
    decisions = [
        capped[capped["taxon"].isin(considered)],
        left_out.assign(decision=NOT_CHOSEN, reason=left_out["taxon"].map(why)),
    ]
    labelled = kept[kept["taxon"].map(label_of) == kept["taxon"]].assign(label=lambda t: t["taxon"])
    other = spec.get("other")
    if other:
        pool = kept[kept["taxon"].map(label_of) == other["label"]]
        if len(pool) < other["size"]:
            pool_species = sorted(choice.loc[choice["label"] == other["label"], "taxon"])
            raise ValueError(
                f"dataset {name}: other.size is {other['size']} but only {len(pool)} images "
                f"of {', '.join(pool_species)} are kept"
            )
        # In the order its roles are drawn in: a photo that joins the pool's draw comes after
        # every photo drawn before it, and takes the role of the one it replaces.
        picked, unpicked = sample_other(pool, other["size"], _draw_key(spec["seed"], name, other["label"]))
        labelled = pd.concat([labelled, picked.assign(label=other["label"], **shared_ranks(pool))])
        decisions.append(unpicked.assign(decision="unused", reason=f"not drawn for '{other['label']}'"))
    _check_groups(labelled, name)

    parts = []
    for label, images in labelled.groupby("label", sort=True):
        key = _draw_key(spec["seed"], name, label)
        fractions = (spec.get("val_fraction"), spec.get("test_fraction", 0))
        if spec.get("test_sources"):
            roles = source_roles(images, set(spec["test_sources"]), *fractions, key)
        elif spec.get("use_source_split"):
            roles = given_roles(images, *fractions, key, where=f"datasets.{name}")
        else:
            roles = assign_roles(images, *fractions, key)
        images = images.assign(split=roles)
        if not (images["split"] == "train").any():
            raise ValueError(
                f"dataset {name}: label {label} has {len(images)} image(s) in {images['group'].nunique()} group(s), "
                "none left for training after validation and test: add images or lower the fractions"
            )
        parts.append((images, key))
    cap = int(spec["cap_ratio"] * min((images["split"] == "train").sum() for images, _ in parts))

    rows = []
    for images, key in parts:
        train = images[images["split"] == "train"].sort_values("sha256")
        if len(train) > cap:
            dropped = train.iloc[np.argsort(seeded_ranks(f"{key}:capped", train["sha256"]), kind="stable")[cap:]]
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
    split = table[SPLIT_COLUMNS].reset_index(drop=True)
    return split, dropped.reindex(columns=DECISION_COLUMNS).reset_index(drop=True), choice


def count_table(
    split: pd.DataFrame, decisions: pd.DataFrame | None = None, choice: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Images per label and split (the study's Table 1), per label those capped, and with
    `choice` (species_choice) why each label is one."""
    counts = pd.crosstab(split["label"], split["split"]).reindex(columns=list(SPLITS), fill_value=0)
    counts = counts.loc[:, (counts.sum() > 0) | (counts.columns != "test")]
    counts["total"] = counts.sum(axis=1)
    if decisions is not None:
        capped = decisions[decisions["decision"] == "capped"]
        counts["capped"] = capped.groupby("label").size().reindex(counts.index, fill_value=0)
    counts.loc["total"] = counts.sum()
    if choice is not None:
        counts["chosen"] = counts.index.map(_why_labels(choice))
    return counts.reset_index().rename(columns={"index": "label"})


def _why_labels(choice: pd.DataFrame) -> dict[str, str]:
    """Per label, why it is one: a class's reason, or how many species a pool holds; and
    for the total, what became of the species considered."""
    classes = choice[choice["label"] == choice["taxon"]]
    pools = choice[(choice["label"] != "") & (choice["label"] != choice["taxon"])]
    left_out = (choice["label"] == "").sum()
    return {
        **{label: f"pool of {n} species" for label, n in pools.groupby("label")["taxon"].size().items()},
        **dict(zip(classes["label"], classes["reason"])),
        "total": f"{len(classes)} species as classes, {len(pools)} pooled, {left_out} left out",
    }


LEAK_COLUMNS = ["dataset", "train_sha256", "held_out", "held_out_image", "distance"]


def benchmark_hashes(name: str, folder) -> pd.DataFrame:
    """(image, phash) of every photo under a benchmark folder, hashed as cleaning hashes; a
    file that does not decode, or a link that leads outside the folder, is left out, saying so
    in the log."""
    folder, rows, skipped = Path(folder), [], []
    for path in image_files(folder, folder.resolve(), skipped):
        try:
            phash = near_duplicates.perceptual_hash(decode(path.read_bytes(), MAX_PIXELS).image)
        except Exception as error:  # noqa: BLE001 - one unreadable photo must not stop the check
            log.warning("benchmark %s: %s left out of the leak check: %s", name, readable(str(path)), error)
            continue
        rows.append({"image": readable(str(path.relative_to(folder))), "phash": phash})
    if skipped:
        log.warning("benchmark %s: skipped %s", name, "; ".join(skipped))
    return pd.DataFrame(rows, columns=["image", "phash"])


def leak_pairs(
    split: pd.DataFrame, clean: pd.DataFrame, max_distance: int, benchmarks: dict[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """Every (training image, held-out image) pair whose perceptual hashes are within
    `max_distance` bits: val and test images of the split, and the photos of each benchmark
    folder (`benchmarks`: name -> benchmark_hashes)."""
    phash = clean.set_index("sha256")["phash"]
    held = [
        pd.DataFrame({"role": split["split"], "image": split["sha256"], "phash": split["sha256"].map(phash)}),
        *(table.assign(role=f"benchmark {name}") for name, table in (benchmarks or {}).items()),
    ]
    candidates = pd.concat(held, ignore_index=True).fillna({"phash": ""})
    candidates = candidates[candidates["phash"] != ""].reset_index(drop=True)
    i, j, distance = near_duplicates.pairs_within(near_duplicates.hash_words(candidates["phash"]), max_distance)
    roles = candidates["role"].to_numpy()
    # One side trains, the other does not: pairs within one role are the grouping's business.
    crossing = (roles[i] == "train") != (roles[j] == "train")
    i, j, distance = i[crossing], j[crossing], distance[crossing]
    train, other = np.where(roles[i] == "train", i, j), np.where(roles[i] == "train", j, i)
    pairs = pd.DataFrame(
        {
            "dataset": split["dataset"].iloc[0] if len(split) else "",
            "train_sha256": candidates["image"].to_numpy()[train],
            "held_out": roles[other],
            "held_out_image": candidates["image"].to_numpy()[other],
            "distance": distance,
        },
        columns=LEAK_COLUMNS,
    )
    return pairs.sort_values(["held_out", "train_sha256", "held_out_image"], ignore_index=True)


def run(
    clean_path,
    name: str,
    spec: dict,
    split_path,
    decisions_path,
    counts_path,
    leaks_path,
    max_distance: int,
    benchmarks: dict | None = None,
) -> pd.DataFrame:
    clean = read_table(clean_path, CLEAN_COLUMNS_WITHOUT_MEASURES)
    table, decisions, choice = split_dataset(clean, name, spec)
    write_table(table, split_path, SPLIT_COLUMNS)
    write_table(decisions, decisions_path, DECISION_COLUMNS)
    write_table(count_table(table, decisions, choice), counts_path)
    hashed = {bench: benchmark_hashes(bench, folder) for bench, folder in (benchmarks or {}).items()}
    write_table(leak_pairs(table, clean, max_distance, hashed), leaks_path, LEAK_COLUMNS)
    return table


@steps.declare(
    "split",
    "split one dataset",
    steps.inp("clean"),
    steps.Option("name", "wildcards", key="dataset"),
    steps.SPEC,
    steps.out("out", key="split"),
    steps.out("decisions"),
    steps.out("counts"),
    steps.out("leaks", help="near-duplicate pairs across train and held-out images"),
    steps.par("max_distance", type="int", help="the near-duplicate distance (bits)"),
    steps.par("benchmarks", type="json", default={}, help="benchmark folders by name, as JSON"),
)
def split_step(clean, name, spec, out, decisions, counts, leaks, max_distance, benchmarks=None):
    """The `split` step (rule split_dataset): run, then the photos per label and split."""
    table = run(clean, name, spec, out, decisions, counts, leaks, max_distance, benchmarks)
    log.info("%s: %s", name, table.groupby(["label", "split"]).size().to_dict())
