"""The rows the detect stage reads, and their digests: rule train_detector reruns when the photos
it trains on change, rule detect_fish when the photos it looks at (or scores on) change, each by a
digest among its params, not whenever cleaning or a split reruns. A decision about one photo then
retrains the detector only where that photo (or the split it moves) is one of its training rows.

Snakemake plans before the splits are written: a split table on disk may be the one the run is
about to replace. The held-out photos are therefore taken from the splits as fishid.split.stage
makes them from the clean table (`dataset_splits`), the same function rule split_dataset runs:
at planning time they are what the run will write.

No torch here: the Snakefile imports this module to plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd

from fishid.split.stage import seeded_ranks, split_dataset
from fishid.tables import read_table
from fishid.variants import TRAINED_DETECTORS

QUALITY_SPLIT = "test"
# What the detect stage reads of the sources' records: where a photo's known boxes come from.
RECORD_READ = ["record_id", "source", "media_url"]
# What the detect stage reads of each kept photo: which it is, the derived copy it opens (its
# path in the derived folder, so that a moved project digests the same) and its original size.
PHOTO_COLUMNS = ["image", "derived_path", "width", "height"]


def read_records(paths) -> pd.DataFrame:
    return pd.concat([read_table(path, RECORD_READ) for path in paths])


def kept_rows(clean: pd.DataFrame) -> pd.DataFrame:
    """The kept photos, in the clean table's order: PHOTO_COLUMNS and record_ids."""
    kept = clean[clean["kept"].astype(str) == "True"]
    return pd.DataFrame(
        {
            "image": kept["sha256"].to_numpy(),
            "derived_path": kept["derived_path"].to_numpy(),
            "width": kept["width"].astype(int).to_numpy(),
            "height": kept["height"].astype(int).to_numpy(),
            "record_ids": kept["record_ids"].to_numpy(),
        }
    )


def known_sources(photos: pd.DataFrame, records: pd.DataFrame, synthetic_sources) -> pd.DataFrame:
    """(image, url) of each photo of `photos` that a synthetic source's record describes, in
    `photos`' order: the url is where its true boxes come from (fishid.sources.synthetic_boxes)."""
    urls = records[records["source"].isin(list(synthetic_sources))].set_index("record_id")["media_url"]
    rows = []
    for image, record_ids in zip(photos["image"], photos["record_ids"]):
        url = next((urls[r] for r in record_ids.split(",") if r in urls.index), None)
        if url is not None:
            rows.append({"image": image, "url": url})
    return pd.DataFrame(rows, columns=["image", "url"])


def held_out(splits: Iterable[pd.DataFrame], role: str | None = None) -> set[str]:
    """Photos a dataset holds out (any role but train, or only `role`), over every dataset's split."""
    held = set()
    for split in splits:
        chosen = split["split"] != "train" if role is None else split["split"] == role
        held.update(split.loc[chosen, "sha256"])
    return held


def dataset_splits(clean: pd.DataFrame, datasets: dict) -> list[pd.DataFrame]:
    """Each dataset's split table as rule split_dataset makes it from `clean` (the clean table
    read with CLEAN_COLUMNS_WITHOUT_MEASURES) and the dataset's settings."""
    return [split_dataset(clean, name, spec)[0] for name, spec in datasets.items()]


def training_rows(
    clean: pd.DataFrame, records: pd.DataFrame, splits: Iterable[pd.DataFrame], synthetic_sources, most: int, seed: int
) -> pd.DataFrame:
    """The photos the detector trains on: the kept photos with known boxes that no split holds
    out, at most `most` of them (a sample seeded by `seed`, in SHA-256 order); PHOTO_COLUMNS and url.
    The sample takes the photos whose seeded hash is smallest, so that a photo leaving or
    joining the candidates changes no other photo's place in it (a random draw over the
    remaining candidates would retrain the detector after any exclusion)."""
    photos = kept_rows(clean)
    known = known_sources(photos, records, synthetic_sources)
    known = known[~known["image"].isin(held_out(splits))]
    if len(known) > most:
        rank = pd.Series(seeded_ranks(str(seed), known["image"]), index=known.index)
        known = known.loc[rank.sort_values(kind="stable").index[:most]].sort_values("image")
    return known.merge(photos[PHOTO_COLUMNS], on="image", how="left")[[*PHOTO_COLUMNS, "url"]]


def quality_rows(clean: pd.DataFrame, records: pd.DataFrame, splits: Iterable[pd.DataFrame], synthetic_sources):
    """(image, url) of the kept photos with known boxes that a split tests on: the detector's score is theirs."""
    known = known_sources(kept_rows(clean), records, synthetic_sources)
    return known[known["image"].isin(held_out(splits, QUALITY_SPLIT))].reset_index(drop=True)


def digest(*tables: pd.DataFrame) -> str:
    """SHA-256 of the tables' text, rows in SHA-256 order (column `image`)."""
    text = "".join(t.sort_values("image", kind="stable").to_csv(sep="\t", index=False) for t in tables)
    return hashlib.sha256(text.encode()).hexdigest()


def training_digest(clean, records, splits, synthetic_sources, most: int, seed: int) -> str:
    """Rule train_detector's rows (training_rows); `splits`: dataset_splits of `clean`."""
    return digest(training_rows(clean, records, splits, synthetic_sources, most, seed))


def detection_digest(clean, records, splits, synthetic_sources) -> str:
    """Rule detect_fish's rows: every kept photo it looks at, and the test photos it is scored on
    (quality_rows); `splits`: dataset_splits of `clean`."""
    return digest(kept_rows(clean)[PHOTO_COLUMNS], quality_rows(clean, records, splits, synthetic_sources))


def rule_digests(clean, records, datasets: dict, detect: dict, synthetic_sources) -> dict[str, str]:
    """Each detect rule's params `rows` (rule -> digest) for the clean table `clean`: detect_fish's,
    and train_detector's where the pipeline trains the detector. `detect`: the detect settings,
    defaults filled in; `datasets`: every dataset's settings (their splits are made here)."""
    splits = dataset_splits(clean, datasets)
    digests = {"detect_fish": detection_digest(clean, records, splits, synthetic_sources)}
    if TRAINED_DETECTORS[detect["detector"]]:
        most, seed = detect["train_photos"], detect["training"]["seed"]
        digests["train_detector"] = training_digest(clean, records, splits, synthetic_sources, most, seed)
    return digests
