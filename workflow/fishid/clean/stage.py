"""The cleaning stage: one row per stored image (SHA-256), kept or dropped with a reason.

Per image (in parallel): decode to RGB (fishid.clean.decode), measure it (fishid.clean.photo_filters),
hash it (fishid.clean.near_duplicates) and write the derived copy the models read. That
work is cached per SHA-256 and per-image settings (results/clean/measures: cached_clean_image),
so that a rerun decodes only new images; with clean.shards it is split by SHA-256 prefix
into jobs (run_shard) whose tables the gather (run with shard_tables) reads.
Then, over all images at once, in this order (the first reason that applies is recorded):

1. undecodable, decompression bomb, too small;
2. excluded by the user (config/exclusions.tsv: an image hash drops the image, a record id
   drops that record, and the image when none of its records is left); relabelled by the
   user as "not a fish" (config/relabels.tsv); an image relabelled as a species takes that
   label instead of its records' (for the conflicts below too), and keeps the reason;
3. basis of record and preparations the source gives (preserved specimens, fossils,
   skeletons ...), when any record of the image has them;
4. not a photo (heuristic flags, each configured);
5. label conflicts: a group (see below) whose records name more than one species is
   resolved by clean.conflicts (drop_all, or majority);
6. near duplicates of one species: with near_duplicates.keep: largest, only the largest copy
   is kept, the others point to it in duplicate_of.

Groups are what a split must never cut: images linked by one occurrence, by one SHA-256
(records of several sources pointing to the same bytes) or by one near-duplicate cluster,
merged transitively. A group is named after its smallest SHA-256.

Each image carries its ranks above the species (kingdom ... genus) from its records
(image_ranks): one value per rank, empty where the records disagree or none knows it.
"""

import io
import json
import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fishid import steps
from fishid.clean import grouping, near_duplicates, photo_filters
from fishid.clean.decode import DecodeError
from fishid.clean.decode import decode as decode_bytes
from fishid.config import section_with_defaults
from fishid.download.store import MAX_PIXELS
from fishid.tables import (
    DOWNLOAD_COLUMNS,
    HIGHER_RANKS,
    clean_columns,
    read_table,
    write_table,
    write_text_atomic,
)

log = logging.getLogger(__name__)

EXCLUSION_COLUMNS = ["id", "reason"]
# A user's relabelling of one image (id: its SHA-256); `when` is for people, cleaning ignores it.
RELABEL_COLUMNS = ["id", "label", "reason", "when"]
NOT_A_FISH = "not a fish"
# The non-photo checks' measures (fishid.clean.photo_filters.CHECKS declares them).
MEASURE_COLUMNS = photo_filters.measure_columns()
# What the per-image step finds out (clean_image), before any decision across images.
DECODED_COLUMNS = [
    "sha256",
    "kept",
    "reason",
    "width",
    "height",
    "format",
    "mode",
    "frames",
    "phash",
    *MEASURE_COLUMNS,
    "derived_path",
]
CLEAN_COLUMNS = clean_columns(MEASURE_COLUMNS)
# Columns of the records table that cleaning reads; preparations (GBIF) and source_split (a
# folder source's train/ and val/) only some sources have, and ranks records listed before them lack.
RECORD_INPUT_COLUMNS = ["record_id", "source", "taxon", "occurrence_id", "basis_of_record"]
OPTIONAL_RECORD_COLUMNS = ["preparations", "source_split", *HIGHER_RANKS]


def settings_with_defaults(settings: dict) -> dict:
    """The clean settings with config/schema.yaml's defaults filled in (a configuration the
    Snakefile filled has them already; a test or a CLI call may not); a bad pattern is named
    before any work."""
    for pattern in settings.get("drop_preparations", {}):
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"clean.drop_preparations: {pattern!r} is not a regular expression ({error})") from error
    return section_with_defaults(settings, "clean")


# --- per image ---------------------------------------------------------------------------


def decode(path) -> Image.Image:
    """A file as RGB, decoded exactly as cleaning decodes it (for labelling new photos).

    Raises what Pillow raised for a corrupt file, or DecodeError for a decompression bomb.
    """
    try:
        return decode_bytes(Path(path).read_bytes(), MAX_PIXELS).image
    except DecodeError as error:
        raise (error.__cause__ or error) from None


def clean_image(sha256: str, source_path, derived_root, settings: dict) -> dict:
    row = {"sha256": sha256, "kept": True, "reason": "", "derived_path": "", "frames": 1}
    try:
        decoded = decode_bytes(Path(source_path).read_bytes(), settings["max_pixels"], at_least=settings["max_side"])
    except DecodeError as error:
        return {**row, "kept": False, "reason": str(error)}
    image = decoded.image
    row.update(
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        mode=decoded.mode,
        frames=decoded.frames,
        phash=near_duplicates.perceptual_hash(image),
        **photo_filters.measure(image),
    )
    if min(decoded.width, decoded.height) < settings["min_side"]:
        return {
            **row,
            "kept": False,
            "reason": f"too small: {decoded.width}x{decoded.height} < {settings['min_side']}",
        }
    relative = f"{sha256[:2]}/{sha256}.jpg"
    target = Path(derived_root, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(derived_jpeg(image, settings["max_side"]))
    return {**row, "derived_path": relative}


# What the derived copies were made with, beside them: `fishid predict` makes the same of a new photo.
PREPROCESS_FILE = "preprocess.json"
DERIVED_QUALITY = 95


def derived_jpeg(image: Image.Image, max_side: int) -> bytes:
    """The derived copy the models read: at most `max_side` on its longest side (LANCZOS), JPEG."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=DERIVED_QUALITY)
    return buffer.getvalue()


def derive_photo(path, preprocess: dict) -> Image.Image:
    """A new photo as the models see theirs: decoded and derived exactly as cleaning does.
    Raises what Pillow raised for a corrupt file, or DecodeError for a decompression bomb."""
    max_side = preprocess["max_side"]
    try:
        decoded = decode_bytes(Path(path).read_bytes(), preprocess["max_pixels"], at_least=max_side)
    except DecodeError as error:
        raise (error.__cause__ or error) from None
    return Image.open(io.BytesIO(derived_jpeg(decoded.image, max_side))).convert("RGB")


# --- inputs -------------------------------------------------------------------------------


def read_exclusions(path) -> dict[str, str]:
    table = read_table(path, EXCLUSION_COLUMNS)
    blank = table[table["reason"].str.strip() == ""]
    if len(blank):
        raise ValueError(f"{path}: give a reason for every exclusion (missing for {', '.join(blank['id'])})")
    return dict(zip(table["id"], table["reason"]))


# How the clean table words a user's decision (the review app reads it back to tell which
# decisions a run has applied).
def exclusion_reason(why: str) -> str:
    return f"excluded by user: {why}"


def not_a_fish_reason(why: str) -> str:
    return f"relabelled by user: {NOT_A_FISH} ({why})"


def relabel_reason(listed_as: str, label: str, why: str) -> str:
    return f"relabelled by user: listed as {listed_as}, now {label} ({why})"


def read_relabels(path) -> dict[str, tuple[str, str]]:
    """SHA-256 -> (new label, reason); no file (older projects) is no relabelling."""
    if path is None or not Path(path).exists():
        return {}
    table = read_table(path, RELABEL_COLUMNS)
    blank = table[(table["reason"].str.strip() == "") | (table["label"].str.strip() == "")]
    if len(blank):
        raise ValueError(
            f"{path}: give a label and a reason for every relabelling (missing for {', '.join(blank['id'])})"
        )
    return {sha: (label, reason) for sha, label, reason in zip(table["id"], table["label"], table["reason"])}


def relabel_links(links: pd.DataFrame, relabels: dict[str, tuple[str, str]]) -> tuple[pd.DataFrame, pd.Series]:
    """The links with a relabelled image's records naming its new species (so that it has one
    label, and votes with it in conflicts), and the reason to record per relabelled image."""
    species = {sha: label for sha, (label, _) in relabels.items() if label != NOT_A_FISH}
    hit = links["sha256"].isin(species)
    before = links[hit].drop_duplicates(["sha256", "taxon"]).groupby("sha256")["taxon"].agg(" and ".join)
    reasons = pd.Series(
        {sha: relabel_reason(before[sha], species[sha], relabels[sha][1]) for sha in before.index},
        dtype=str,
    )
    links = links.copy()
    links.loc[hit, "taxon"] = links.loc[hit, "sha256"].map(species)
    return links, reasons


def read_records(paths) -> pd.DataFrame:
    tables = []
    for path in paths:
        table = read_table(path, RECORD_INPUT_COLUMNS)
        for optional in OPTIONAL_RECORD_COLUMNS:
            if optional not in table:
                table[optional] = ""
        tables.append(table[[*RECORD_INPUT_COLUMNS, *OPTIONAL_RECORD_COLUMNS]])
    return pd.concat(tables, ignore_index=True)


def record_links(records: pd.DataFrame, downloads: pd.DataFrame) -> pd.DataFrame:
    """One row per (record, stored image), with what the record says about the image."""
    stored = downloads[downloads["sha256"] != ""][["record_id", "sha256", "path"]]
    return stored.merge(records, on="record_id", how="inner").sort_values(["sha256", "record_id"], ignore_index=True)


# --- decisions ----------------------------------------------------------------------------


def _normalised(value: str) -> str:
    """PRESERVED_SPECIMEN (GBIF API) and PreservedSpecimen (Darwin Core archives) alike."""
    return "".join(ch for ch in value.upper() if ch.isalnum())


def record_reasons(links: pd.DataFrame, exclusions: dict[str, str], settings: dict) -> pd.DataFrame:
    """Per link: excluded (the record is out), and source_reason (the image is out)."""
    links = links.copy()
    links["excluded"] = [exclusions.get(r, "") for r in links["record_id"]]
    basis = {
        _normalised(value): f"basis of record: {value} ({why})"
        for value, why in settings.get("drop_basis_of_record", {}).items()
    }
    source_reason = links["basis_of_record"].map(lambda value: basis.get(_normalised(value), ""))
    for pattern, why in settings.get("drop_preparations", {}).items():
        hit = links["preparations"].str.contains(pattern, case=False, regex=True) & (source_reason == "")
        source_reason[hit] = "preparations: " + links.loc[hit, "preparations"] + f" ({why})"
    links["source_reason"] = source_reason
    return links


def _drop(table: pd.DataFrame, rows, reasons) -> None:
    """Drop `rows` (a boolean mask over the table, or index labels) that are still kept,
    recording `reasons` (one string, or a Series by index label)."""
    if isinstance(rows, pd.Index):
        rows = table.index.isin(rows)
    mask = pd.Series(rows, index=table.index) & table["kept"]
    table.loc[mask, "kept"] = False
    table.loc[mask, "reason"] = reasons if isinstance(reasons, str) else reasons.reindex(table.index)[mask]


def _first_non_empty(links: pd.DataFrame, column: str) -> pd.Series:
    present = links[links[column] != ""]
    return present.groupby("sha256")[column].first()


def _given_roles(links: pd.DataFrame) -> pd.Series:
    if "source_split" not in links:
        return pd.Series(dtype=str)
    given = links[links["source_split"] != ""].drop_duplicates(["sha256", "source_split"])
    return given.sort_values(["sha256", "source_split"]).groupby("sha256")["source_split"].agg("|".join)


def image_table(links: pd.DataFrame, decoded: pd.DataFrame, exclusions: dict[str, str]) -> pd.DataFrame:
    """One row per image: the decode results and what its records say (listed_as: the
    species its counted records name, "|"-joined)."""
    counted = links[links["excluded"] == ""].drop_duplicates(["sha256", "taxon"]).sort_values(["sha256", "taxon"])
    per_image = pd.DataFrame(
        {
            "record_ids": links.groupby("sha256", sort=True)["record_id"].agg(",".join),
            "sources": links.drop_duplicates(["sha256", "source"])
            .sort_values(["sha256", "source"])
            .groupby("sha256")["source"]
            .agg("|".join),
            "listed_as": counted.groupby("sha256")["taxon"].agg("|".join),
            "n_taxa": counted.groupby("sha256").size(),
            "source_reason": _first_non_empty(links, "source_reason"),
            "record_exclusion": _first_non_empty(links, "excluded"),
            "source_split": _given_roles(links[links["excluded"] == ""]),
        }
    )
    text = ["listed_as", "source_reason", "record_exclusion", "source_split", "sources"]
    per_image[text] = per_image[text].fillna("")
    per_image["n_taxa"] = per_image["n_taxa"].fillna(0).astype(int)
    per_image["image_exclusion"] = [exclusions.get(sha, "") for sha in per_image.index]
    table = decoded.set_index("sha256").join(per_image, how="inner").reset_index()
    table["taxon"] = table["listed_as"].where(table["n_taxa"] == 1, "")
    return table


def apply_filters(table: pd.DataFrame, settings: dict, relabels: dict | None = None) -> None:
    excluded_image = table["image_exclusion"] != ""
    _drop(table, excluded_image, table["image_exclusion"].map(exclusion_reason))
    not_fish = {sha: why for sha, (label, why) in (relabels or {}).items() if label == NOT_A_FISH}
    reasons = table["sha256"].map(lambda sha: not_a_fish_reason(not_fish.get(sha, "")))
    _drop(table, table["sha256"].isin(not_fish), reasons)
    no_record_left = table["n_taxa"] == 0
    _drop(table, no_record_left, table["record_exclusion"].map(exclusion_reason))
    _drop(table, table["source_reason"] != "", table["source_reason"])
    flags = photo_filters.non_photo_reasons(table, settings.get("non_photo", {}))
    _drop(table, flags != "", "not a photo: " + flags)


def near_duplicate_pairs(table: pd.DataFrame, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    hashed = np.flatnonzero((table["phash"] != "").to_numpy())
    words = near_duplicates.hash_words(table["phash"].to_numpy()[hashed])
    i, j, _ = near_duplicates.pairs_within(words, max_distance)
    return hashed[i], hashed[j]


def assign_groups(table: pd.DataFrame, links: pd.DataFrame, pairs) -> None:
    """Columns near_duplicate_cluster and group (table is sorted by sha256)."""
    n = len(table)
    cluster = grouping.connected_components(n, *pairs)
    shas = table["sha256"].to_numpy()
    clustered = np.bincount(cluster, minlength=n)[cluster] > 1
    table["near_duplicate_cluster"] = np.where(clustered, shas[cluster], "")
    position = pd.Series(np.arange(n), index=table["sha256"])
    occurrence = links["occurrence_id"].where(links["occurrence_id"] != "", "record:" + links["record_id"])
    occ_a, occ_b = grouping.links_from_shared_keys(position[links["sha256"]].to_numpy(), occurrence)
    group = grouping.connected_components(n, np.r_[pairs[0], occ_a], np.r_[pairs[1], occ_b])
    table["group"] = shas[group]


def group_votes(table: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """Per group whose counted records name several species: the species named, most
    records first ("listed"), the species with the most records if it has more than any
    other ("winner", else "")."""
    excluded_images = table.loc[table["image_exclusion"] != "", "sha256"]
    counted = links[(links["excluded"] == "") & ~links["sha256"].isin(excluded_images)]
    counted = counted.merge(table[["sha256", "group"]], on="sha256")
    votes = counted.groupby(["group", "taxon"]).size().rename("n").reset_index()
    votes = votes[votes.groupby("group")["taxon"].transform("size") > 1]
    votes = votes.sort_values(["group", "n", "taxon"], ascending=[True, False, True])
    plural = np.where(votes["n"] > 1, "s", "")
    votes["text"] = votes["taxon"] + " (" + votes["n"].astype(str) + " record" + plural + ")"
    rank = votes.groupby("group").cumcount()
    first, second = votes[rank == 0].set_index("group"), votes[rank == 1].set_index("group")
    return pd.DataFrame(
        {
            "listed": votes.groupby("group")["text"].agg(" and ".join),
            "winner": first["taxon"].where(first["n"] > second["n"], ""),
        }
    )


def resolve_conflicts(table: pd.DataFrame, links: pd.DataFrame, rule: str) -> None:
    conflicts = group_votes(table, links)
    affected = table[table["kept"] & table["group"].isin(conflicts.index)]
    if not len(affected):
        return
    info = conflicts.loc[affected["group"]].set_index(affected.index)
    same_photo = affected["n_taxa"] > 1
    where = pd.Series(
        np.where(
            same_photo, "same photo", "near-duplicate or same-occurrence photos (group " + affected["group"] + ")"
        ),
        index=affected.index,
    )
    reasons = "label conflict: " + where + " listed as " + info["listed"]
    if rule == "majority":
        names_winner = pd.Series(
            [w != "" and w in listed.split("|") for w, listed in zip(info["winner"], affected["listed_as"])],
            index=affected.index,
        )
        winners = affected.index[names_winner]
        table.loc[winners, "taxon"] = info.loc[winners, "winner"]
        table.loc[winners, "reason"] = (
            "label conflict resolved by majority: " + (where + " listed as " + info["listed"])[winners]
        )
        outcome = np.where(info["winner"] != "", "the majority names " + info["winner"], "no majority")
        _drop(table, affected.index[~names_winner], reasons + "; " + outcome)
        return
    # The plain wording for the common case: the same bytes under two names.
    plain = "label conflict: same photo listed as " + affected["listed_as"].str.replace("|", " and ", regex=False)
    _drop(table, affected.index, reasons.where(~same_photo, plain))


def agreed_ranks(links: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per value of `key`, each rank above the species that its links' records agree on: the
    one value they know (an empty rank is unknown, not a disagreement), else empty."""
    links = links.assign(**{rank: "" for rank in HIGHER_RANKS if rank not in links})
    agreed = pd.DataFrame(index=pd.Index(links[key].unique(), name=key))
    for rank in HIGHER_RANKS:
        known = links.loc[links[rank] != "", [key, rank]].drop_duplicates()
        single = known[~known[key].duplicated(keep=False)].set_index(key)[rank]
        agreed[rank] = single.reindex(agreed.index).fillna("")
    return agreed


def image_ranks(table: pd.DataFrame, listed: pd.DataFrame, counted: pd.DataFrame) -> pd.DataFrame:
    """Each image's ranks above its species: those the records of its species (`taxon`, after
    relabelling and conflicts) agree on across all images, so that every image of a species has
    the same; for an image without a species (a label conflict), those its own counted records
    agree on (the genus of two species of one genus). `listed`: the records as listed, whose
    ranks are their own taxon's even where the user relabelled the image."""
    by_taxon = agreed_ranks(listed[listed["taxon"] != ""], "taxon").reindex(table["taxon"]).fillna("")
    by_image = agreed_ranks(counted, "sha256").reindex(table["sha256"]).fillna("")
    has_taxon = (table["taxon"] != "").to_numpy()[:, None]
    return pd.DataFrame(np.where(has_taxon, by_taxon, by_image), index=table.index, columns=HIGHER_RANKS)


def drop_near_duplicates(table: pd.DataFrame) -> None:
    """Keep the largest copy (then the smallest SHA-256) of each near-duplicate cluster."""
    candidates = table[table["kept"] & (table["near_duplicate_cluster"] != "")]
    pixels = candidates["width"].astype(int) * candidates["height"].astype(int)
    ranked = candidates.assign(pixels=-pixels).sort_values(["near_duplicate_cluster", "pixels", "sha256"])
    keeper = ranked.groupby("near_duplicate_cluster")["sha256"].transform("first")
    copies = ranked.index[ranked["sha256"] != keeper]
    table.loc[copies, "duplicate_of"] = keeper[copies]
    _drop(table, table.index.isin(copies), "near duplicate: of " + table["duplicate_of"] + " (its largest copy, kept)")


def decide(
    links: pd.DataFrame,
    decoded: pd.DataFrame,
    exclusions: dict[str, str],
    settings: dict,
    relabels: dict[str, tuple[str, str]] | None = None,
) -> pd.DataFrame:
    settings = settings_with_defaults(settings)
    listed = links  # as the sources listed them: each record's ranks are those of its own taxon
    links, relabelled = relabel_links(links, relabels or {})
    links = record_reasons(links, exclusions, settings)
    table = image_table(links, decoded, exclusions)
    table["duplicate_of"] = ""
    apply_filters(table, settings, relabels)
    # Kept, but with the user's word recorded: the audit and the review app show why the label changed.
    still_kept = table["kept"] & table["sha256"].isin(relabelled.index)
    table.loc[still_kept, "reason"] = table.loc[still_kept, "sha256"].map(relabelled)
    pairs = near_duplicate_pairs(table, settings["near_duplicates"]["max_distance"])
    assign_groups(table, links, pairs)
    resolve_conflicts(table, links, settings["conflicts"])
    if settings["near_duplicates"]["keep"] == "largest":
        drop_near_duplicates(table)
    table[HIGHER_RANKS] = image_ranks(table, listed, links[links["excluded"] == ""])
    return table.reindex(columns=CLEAN_COLUMNS)


# --- the per-image cache and shards ---------------------------------------------------------

# Bump when the per-image code (decode, measures, hash, derived copy) changes its results: every
# cached entry is then redone. A new check needs no bump: an entry without its measure is redone
# (_has_every_measure), and the entries of the other images stay valid.
CACHE_VERSION = 1
# The clean settings that change the per-image work; a change of any other (exclusions,
# relabels, filters' thresholds, near-duplicate distance ...) reuses the cache.
PER_IMAGE_SETTINGS = ["max_side", "min_side", "max_pixels"]
INTEGER_COLUMNS = ["width", "height", "frames", *photo_filters.measure_columns(int)]
FLOAT_COLUMNS = photo_filters.measure_columns(float)
TEXT_COLUMNS = ["format", "mode", "phash", "reason", "derived_path"]


def cache_root_for(derived_root) -> Path:
    """The per-image cache, beside the derived copies: results/clean/measures for results/clean/derived."""
    return Path(derived_root).parent / "measures"


def per_image_settings(settings: dict) -> dict:
    """What a cache entry is keyed by, besides the image's SHA-256."""
    settings = settings_with_defaults(settings)
    key = {name: settings[name] for name in PER_IMAGE_SETTINGS}
    return {**key, "jpeg_quality": DERIVED_QUALITY, "version": CACHE_VERSION}


def shard_of(sha256: str, shards: int) -> int:
    """The shard an image's per-image work falls in: its SHA-256's first 8 hex digits, modulo."""
    return int(sha256[:8], 16) % shards


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _cache_entry(sha256: str, cache_root) -> Path:
    return Path(cache_root, sha256[:2], f"{sha256}.json")


def _has_every_measure(row: dict) -> bool:
    """Whether a cached row holds the measures the checks take now; one of an undecodable image
    (no hash) has none to lack."""
    return "phash" not in row or all(column in row for column in MEASURE_COLUMNS)


def _cached_row(sha256: str, cache_root, key: dict) -> dict | None:
    """The cached row made with these per-image settings, if there is one (with its derived copy)."""
    try:
        cached = json.loads(_cache_entry(sha256, cache_root).read_text())
        row = cached["row"]
        if (
            cached["key"] == key
            and _has_every_measure(row)
            and (not row["derived_path"] or Path(cache_root, row["derived_path"]).exists())
        ):
            return row
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def cached_clean_image(sha256: str, source_path, cache_root, settings: dict) -> tuple[dict, bool]:
    """clean_image's row, from the cache when it holds one made with the same per-image
    settings (then True), else made now and cached (the derived copy first, the row last:
    a kill leaves no entry that points to a missing copy)."""
    key = per_image_settings(settings)
    row = _cached_row(sha256, cache_root, key)
    if row is not None:
        return row, True
    entry = _cache_entry(sha256, cache_root)
    entry.parent.mkdir(parents=True, exist_ok=True)
    row = {name: _plain(value) for name, value in clean_image(sha256, source_path, cache_root, settings).items()}
    write_text_atomic(entry, json.dumps({"key": key, "row": row}, sort_keys=True) + "\n")
    return row, False


def _numeric(column: pd.Series) -> pd.Series:
    """Numbers, whether given as numbers or as a TSV's text ("" for none)."""
    return pd.to_numeric(column.mask(column.astype(str).isin(["", "<NA>", "nan"])))


def typed(decoded: pd.DataFrame) -> pd.DataFrame:
    """The per-image table with its types, whether it was made now or read back from a shard's TSV."""
    decoded = decoded.reindex(columns=DECODED_COLUMNS)
    decoded[TEXT_COLUMNS] = decoded[TEXT_COLUMNS].fillna("").astype(str)
    for column in INTEGER_COLUMNS:
        decoded[column] = _numeric(decoded[column]).astype("Int64")
    for column in FLOAT_COLUMNS:
        decoded[column] = _numeric(decoded[column]).astype(float)
    decoded["kept"] = decoded["kept"].map(lambda v: v if isinstance(v, bool) else str(v) == "True").astype(bool)
    return decoded.sort_values("sha256", ignore_index=True)


def decode_all(images: pd.DataFrame, store_root, cache_root, settings: dict, threads: int) -> pd.DataFrame:
    """The per-image rows of `images` (sha256, path), sorted by SHA-256; the derived copies
    (and each row) land in the cache, and only images the cache lacks are decoded."""
    args = [(sha, Path(store_root, path), cache_root, settings) for sha, path in zip(images["sha256"], images["path"])]
    with ProcessPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(cached_clean_image, *zip(*args), chunksize=16)) if args else []
    from_cache = sum(hit for _, hit in results)
    log.info("decoded %d image(s), %d from the cache (%s)", len(results) - from_cache, from_cache, cache_root)
    return typed(pd.DataFrame([row for row, _ in results], columns=DECODED_COLUMNS))


def table_from_cache(
    record_paths, download_paths, exclusions_path, relabels_path, store_root, cache_root, settings: dict
) -> pd.DataFrame | None:
    """The table cleaning would write now, from the per-image cache alone: nothing is decoded
    or written (the review app plans with it while a run may be going). None when the cache
    lacks an image (cleaning has not run since it was stored)."""
    settings = settings_with_defaults(settings)
    key = per_image_settings(settings)
    links, images = stored_images(record_paths, download_paths, store_root)
    rows = [_cached_row(sha, cache_root, key) for sha in images["sha256"]]
    if any(row is None for row in rows):
        return None
    decoded = typed(pd.DataFrame(rows, columns=DECODED_COLUMNS))
    return decide(links, decoded, read_exclusions(exclusions_path), settings, read_relabels(relabels_path))


def link_derived(decoded: pd.DataFrame, cache_root, derived_root) -> None:
    """Place each derived copy under derived_root from the cache (a hard link, else a copy)."""
    for relative in decoded.loc[decoded["derived_path"] != "", "derived_path"]:
        source, target = Path(cache_root, relative), Path(derived_root, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if target.samefile(source):
                continue
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def stored_images(record_paths, download_paths, store_root) -> pd.DataFrame:
    """The links (record, image) and the stored images (sha256, path) cleaning works on."""
    records = read_records(record_paths)
    downloads = pd.concat([read_table(p, DOWNLOAD_COLUMNS) for p in download_paths])
    links = record_links(records, downloads)
    images = links.drop_duplicates("sha256")[["sha256", "path"]]
    missing = [p for p in images["path"] if not Path(store_root, p).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {', '.join(map(str, download_paths))} are not in "
            f"{store_root} (first: {missing[0]}): restore the store (dvc pull) or delete those "
            "download tables so that they are fetched again"
        )
    return links, images


def run_shard(
    record_paths, download_paths, store_root, cache_root, table_path, settings: dict, shard: int, shards: int, threads=1
) -> pd.DataFrame:
    """The per-image work of one shard (images whose SHA-256 falls in it): decoded into the
    cache, its rows written to `table_path` for the gather (run with shard_tables)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: want 0 <= shard < shards")
    settings = settings_with_defaults(settings)
    _, images = stored_images(record_paths, download_paths, store_root)
    mine = images[[shard_of(sha, shards) == shard for sha in images["sha256"]]]
    log.info("shard %d of %d: %d of %d image(s)", shard, shards, len(mine), len(images))
    decoded = decode_all(mine, store_root, cache_root, settings, threads)
    write_table(decoded, table_path, DECODED_COLUMNS)
    return decoded


def read_shard_tables(paths, images: pd.DataFrame) -> pd.DataFrame:
    """The shards' rows, checked to cover every image exactly once."""
    decoded = typed(pd.concat([read_table(p, DECODED_COLUMNS) for p in paths], ignore_index=True))
    wanted, have = set(images["sha256"]), decoded["sha256"]
    if have.duplicated().any() or set(have) != wanted:
        lacking = sorted(wanted - set(have))
        raise ValueError(
            f"the shard tables ({len(paths)}) do not cover the stored images once each "
            f"({len(lacking)} missing, first {lacking[:1]}; {int(have.duplicated().sum())} twice): "
            "rerun the clean shards"
        )
    return decoded


def run(
    record_paths,
    download_paths,
    exclusions_path,
    store_root,
    derived_root,
    table_path,
    settings: dict,
    threads: int = 1,
    relabels_path=None,
    shard_tables=None,
    cache_root=None,
) -> pd.DataFrame:
    """Clean every stored image; `settings` is the config's clean section.

    The per-image work comes from `shard_tables` (run_shard's tables) when given, else it
    is done here (through the cache, `cache_root`: beside `derived_root` by default)."""
    settings = settings_with_defaults(settings)
    cache_root = Path(cache_root) if cache_root is not None else cache_root_for(derived_root)
    exclusions = read_exclusions(exclusions_path)
    relabels = read_relabels(relabels_path)
    links, images = stored_images(record_paths, download_paths, store_root)
    if shard_tables:
        decoded = read_shard_tables(shard_tables, images)
        log.info("read %d image(s) from %d shard table(s)", len(decoded), len(shard_tables))
    else:
        decoded = decode_all(images, store_root, cache_root, settings, threads)
    link_derived(decoded, cache_root, derived_root)
    preprocess = {
        "max_side": settings["max_side"],
        "max_pixels": settings["max_pixels"],
        "jpeg_quality": DERIVED_QUALITY,
    }
    write_text_atomic(Path(derived_root, PREPROCESS_FILE), json.dumps(preprocess, indent=2) + "\n")
    table = decide(links, decoded, exclusions, settings, relabels)
    if not table["kept"].any():
        reasons = table["reason"].str.split(":").str[0].value_counts().to_dict()
        raise ValueError(f"cleaning kept no image out of {len(table)}; reasons: {reasons}")
    write_table(table, table_path, CLEAN_COLUMNS)
    return table


@steps.declare(
    "clean",
    "decode, check and keep or drop every stored image",
    steps.inp("records", nargs="+"),
    steps.inp("downloads", nargs="+"),
    steps.inp("exclusions"),
    steps.inp("relabels", default=None, help="the user's relabellings (id, label, reason, when)"),
    steps.par("store"),
    steps.out("derived"),
    steps.inp("shard_tables", key="shards", nargs="+", default=None, help="the clean-shard tables (else: here)"),
    steps.SPEC,
    steps.THREADS,
    steps.out("out", key="table"),
)
def clean_step(records, downloads, exclusions, store, derived, spec, out, threads=1, relabels=None, shard_tables=None):
    """The `clean` step (checkpoint clean_images): run, then what was dropped and why."""
    table = run(
        records,
        downloads,
        exclusions,
        store,
        derived,
        out,
        spec,
        threads,
        relabels_path=relabels,
        shard_tables=shard_tables,
    )
    dropped = table.loc[~table["kept"], "reason"].str.split(":").str[0].value_counts().to_dict()
    log.info("kept %d of %d images; dropped: %s", table["kept"].sum(), len(table), dropped)


@steps.declare(
    "clean-shard",
    "decode and measure one shard of the stored images",
    steps.inp("records", nargs="+"),
    steps.inp("downloads", nargs="+"),
    steps.par("store"),
    steps.par("cache", help="the per-image cache (results/clean/measures)"),
    steps.par("shard", type="int", nargs=2, help="do shard INDEX of COUNT"),
    steps.SPEC,
    steps.THREADS,
    steps.out("out", key=""),
)
def shard_step(records, downloads, store, cache, shard, spec, out, threads=1):
    """The `clean-shard` step (rule clean_shard): shard is (INDEX, COUNT)."""
    index, count = shard
    run_shard(records, downloads, store, cache, out, spec, index, count, threads)
