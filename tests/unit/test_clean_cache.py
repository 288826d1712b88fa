"""Incremental and sharded cleaning: the per-image work is cached per SHA-256 and per-image
settings, and N shards give the same tables as one job."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fishid.clean import stage as clean
from fishid.download import fetch
from fishid.tables import RECORD_COLUMNS, write_table

SETTINGS = {
    "min_side": 32,
    "max_side": 64,
    "exclusions": "unused",
    "near_duplicates": {"max_distance": 12, "keep": "largest"},
}


def photos(folder, names, seed=0):
    """Distinct photo-like JPEGs (smooth random fields, so that their hashes differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC).save(folder / f"{name}.jpg", quality=90)
    return {name: folder / f"{name}.jpg" for name in names}


def prepared(tmp_path, paths):
    records = pd.DataFrame(
        {"record_id": list(paths), "taxon": "Amphiprion clarkii", "media_url": [p.as_uri() for p in paths.values()]}
    ).reindex(columns=RECORD_COLUMNS, fill_value="")
    write_table(records, tmp_path / "records.tsv")
    downloads = fetch.fetch_all(records, tmp_path / "store", tmp_path / "journal", local_roots=["/"])
    write_table(downloads, tmp_path / "downloads.tsv")
    (tmp_path / "exclusions.tsv").write_text("id\treason\n")


def clean_run(tmp_path, caplog, out="clean.tsv", derived="derived", shard_tables=None, **settings):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fishid.clean.stage"):
        clean.run(
            [tmp_path / "records.tsv"],
            [tmp_path / "downloads.tsv"],
            tmp_path / "exclusions.tsv",
            tmp_path / "store",
            tmp_path / derived,
            tmp_path / out,
            {**SETTINGS, **settings},
            threads=2,
            shard_tables=shard_tables,
        )
    return decoded_counts(caplog.text)


def decoded_counts(text):
    found = re.findall(r"decoded (\d+) image\(s\), (\d+) from the cache", text)
    return tuple(map(int, found[-1])) if found else None


def test_a_rerun_decodes_only_new_photos_and_a_decision_change_decodes_none(tmp_path, caplog):
    first = photos(tmp_path / "photos", [f"a{i}" for i in range(6)])
    prepared(tmp_path, first)
    assert clean_run(tmp_path, caplog) == (6, 0)
    assert clean_run(tmp_path, caplog) == (0, 6)
    more = {**first, **photos(tmp_path / "photos", ["b0", "b1"], seed=1)}
    prepared(tmp_path, more)
    assert clean_run(tmp_path, caplog) == (2, 6)
    table = pd.read_csv(tmp_path / "clean.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert len(table) == 8 and all((tmp_path / "derived" / p).is_file() for p in table["derived_path"] if p)
    # Decisions only: nothing decoded.
    assert clean_run(tmp_path, caplog, near_duplicates={"max_distance": 3, "keep": "all"}) == (0, 8)
    assert clean_run(tmp_path, caplog, conflicts="majority") == (0, 8)
    # Per-image settings: everything again.
    assert clean_run(tmp_path, caplog, max_side=48) == (8, 0)


def test_cached_and_fresh_and_sharded_tables_are_the_same_bytes(tmp_path, caplog):
    prepared(tmp_path, photos(tmp_path / "photos", [f"p{i}" for i in range(12)], seed=2))
    clean_run(tmp_path, caplog, out="fresh.tsv")
    clean_run(tmp_path, caplog, out="cached.tsv", derived="derived2")
    shard_tables = []
    for shard in range(4):
        shard_tables.append(tmp_path / f"shard{shard}.tsv")
        clean.run_shard(
            [tmp_path / "records.tsv"],
            [tmp_path / "downloads.tsv"],
            tmp_path / "store",
            tmp_path / "other-cache",
            shard_tables[-1],
            SETTINGS,
            shard,
            4,
        )
    sizes = [len(pd.read_csv(p, sep="\t")) for p in shard_tables]
    assert sum(sizes) == 12 and max(sizes) < 12
    clean_run(tmp_path, caplog, out="sharded.tsv", derived="derived3", shard_tables=shard_tables)
    fresh = (tmp_path / "fresh.tsv").read_bytes()
    assert fresh == (tmp_path / "cached.tsv").read_bytes() == (tmp_path / "sharded.tsv").read_bytes()
    listing = sorted(p.relative_to(tmp_path / "derived") for p in (tmp_path / "derived").rglob("*.jpg"))
    assert listing == sorted(p.relative_to(tmp_path / "derived3") for p in (tmp_path / "derived3").rglob("*.jpg"))
    with pytest.raises(ValueError, match="do not cover"):
        clean_run(tmp_path, caplog, out="bad.tsv", derived="derived4", shard_tables=shard_tables[:3])


def test_download_shards_gather_into_the_same_table(tmp_path):
    paths = photos(tmp_path / "photos", [f"r{i}" for i in range(10)], seed=3)
    records = pd.DataFrame(
        {
            "record_id": [f"mine:{name}.jpg" for name in paths],
            "source": "mine",
            "dataset_key": "folder:photos",
            "taxon": "Amphiprion clarkii",
            "media_url": [p.as_uri() for p in paths.values()],
            # Refused rows (no licence) are gathered too.
            "license": ["CC0-1.0"] * 7 + [""] * 3,
        }
    ).reindex(columns=RECORD_COLUMNS, fill_value="")
    write_table(records, tmp_path / "records.tsv")
    whole = fetch.run(tmp_path / "records.tsv", tmp_path / "whole.tsv", tmp_path / "store")
    assert (whole["error"] == "").sum() == 7
    journal = tmp_path / "whole.tsv.journal"
    shards = [tmp_path / f"shard{i}.tsv" for i in range(3)]
    for index, path in enumerate(shards):
        fetch.run(tmp_path / "records.tsv", path, tmp_path / "store", shard=(index, 3), reuse=[journal])
    assert sum(len(pd.read_csv(p, sep="\t")) for p in shards) == 10
    fetch.gather(tmp_path / "records.tsv", shards, tmp_path / "gathered.tsv", journal)
    assert (tmp_path / "gathered.tsv").read_bytes() == (tmp_path / "whole.tsv").read_bytes()
    # The source's journal, merged from the shards', still holds every stored record once.
    assert len(journal.read_text().splitlines()) == 7


def test_the_table_from_the_cache_is_the_table_the_next_run_writes_and_writes_nothing(tmp_path, caplog):
    """The review app's plan: the clean table after a new decision, predicted from the cache
    alone, is byte for byte what cleaning then writes; nothing is decoded or written for it."""
    paths = photos(tmp_path / "photos", [f"a{i}" for i in range(5)])
    prepared(tmp_path, paths)
    (tmp_path / "relabels.tsv").write_text("id\tlabel\treason\twhen\n")
    clean_run(tmp_path, caplog)
    written = pd.read_csv(tmp_path / "clean.tsv", sep="\t", dtype=str, keep_default_na=False)
    excluded = written["sha256"].iloc[2]
    (tmp_path / "exclusions.tsv").write_text(f"id\treason\n{excluded}\tblurred (test)\n")
    cache = clean.cache_root_for(tmp_path / "derived")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())

    def predicted():
        return clean.table_from_cache(
            [tmp_path / "records.tsv"],
            [tmp_path / "downloads.tsv"],
            tmp_path / "exclusions.tsv",
            tmp_path / "relabels.tsv",
            tmp_path / "store",
            cache,
            SETTINGS,
        )

    table = predicted()
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()) == before
    write_table(table, tmp_path / "predicted.tsv", clean.CLEAN_COLUMNS)
    clean_run(tmp_path, caplog)
    assert (tmp_path / "predicted.tsv").read_bytes() == (tmp_path / "clean.tsv").read_bytes()
    assert "excluded by user: blurred (test)" in (tmp_path / "clean.tsv").read_text()
    # An image the cache has not seen: unknown until cleaning runs.
    next(iter(cache.glob("*/*.json"))).unlink()
    assert predicted() is None
