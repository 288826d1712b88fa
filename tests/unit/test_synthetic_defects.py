"""The synthetic source's planted defects go through the real download and cleaning, each
dropped (or refused) for its own reason, and no ordinary photo with them."""

from pathlib import Path

import pandas as pd
import planted
import pytest
import yaml

from fishid.clean import stage as clean
from fishid.download import fetch
from fishid.sources import base as sources
from fishid.sources import synthetic, synthetic_defects, synthetic_scene
from fishid.tables import RECORD_COLUMNS, read_table, write_table

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())
SIZE = [96, 72]
COUNTS = {"Amphiprion clarkii": 4, "Amphiprion perideraion": 4, "Amphiprion ocellaris": 4, "Amphiprion frenatus": 3}
DEFECTS = dict.fromkeys(synthetic.DEFECTS, 2) | {"same_occurrence": 3}
REALISM_KEYS = ("individuals", "scenes", "nuisances")


def spec(**changes) -> dict:
    demo = DEMO["sources"]["synthetic"]
    base = {"patterns": str(REPO / demo["patterns"]), "size": SIZE, "counts": COUNTS, "defects": DEFECTS}
    return base | {key: demo[key] for key in REALISM_KEYS} | changes


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """List, download and clean a small source with every defect kind, as the rules do."""
    root = tmp_path_factory.mktemp("defects")
    records, _ = sources.list_source("synthetic", spec(), sources.Context("synthetic", seed=DEMO["seed"]))
    write_table(records, root / "records.tsv", RECORD_COLUMNS)
    downloads = fetch.run(root / "records.tsv", root / "downloads.tsv", root / "images", {"licences": DEMO["licences"]})
    settings = {**DEMO["clean"], "max_side": 96, "exclusions": str(REPO / DEMO["clean"]["exclusions"])}
    table = clean.run(
        [root / "records.tsv"],
        [root / "downloads.tsv"],
        settings["exclusions"],
        root / "images",
        root / "derived",
        root / "images.tsv",
        settings,
    )
    return records, downloads, planted.clean_rows(table)


def test_every_kind_is_planted_and_marked_in_its_media_url(pipeline):
    records, _, _ = pipeline
    planted_records = records[records["record_id"].str.contains(":defect-")]
    assert len(planted_records) == sum(DEFECTS.values()) + DEFECTS["label_conflict"]  # a conflict is a pair
    for record in planted_records.to_dict("records"):
        _, params, _ = synthetic.decode_url(record["media_url"])
        assert params["defect"] == planted.kind_of(record["record_id"]), record["record_id"]
    copies = {
        r: synthetic.decode_url(u)[1].get("copy_of")
        for r, u in zip(planted_records["record_id"], planted_records["media_url"])
    }
    assert copies["synthetic:defect-label_conflict-01"] == "synthetic:defect-label_conflict-00"
    ordinary = set(records["record_id"][~records["record_id"].str.contains(":defect-")])
    assert {copies[f"synthetic:defect-near_duplicate-{n:02d}"] for n in range(2)} <= ordinary
    assert set(records["record_id"]) - set(planted_records["record_id"]) == ordinary and len(ordinary) == sum(
        COUNTS.values()
    )


def test_download_refuses_the_html_page_and_the_refused_licences(pipeline):
    records, downloads, rows = pipeline
    errors = dict(zip(downloads["record_id"], downloads["error"]))
    for n in range(2):
        assert errors[f"synthetic:defect-html-{n:02d}"].startswith("not an image: ")
        assert errors[f"synthetic:defect-html-{n:02d}"].endswith(" bytes, HTML or XML")
    assert errors["synthetic:defect-licence-00"] == "licence unknown: 'All rights reserved'"
    assert errors["synthetic:defect-licence-01"] == "licence not allowed: CC-BY-ND-4.0"
    refused = [r for r in records["record_id"] if planted.kind_of(r) in ("html", "licence")]
    assert not any(r in rows for r in refused)  # nothing stored, nothing to clean
    assert [r for r, e in errors.items() if e] == refused


def test_each_planted_defect_is_left_out_for_its_own_reason_and_no_ordinary_photo_is(pipeline):
    records, downloads, rows = pipeline
    exclusions = clean.read_exclusions(REPO / DEMO["clean"]["exclusions"])
    assert planted.check(records, downloads, rows, exclusions) == set(synthetic.DEFECTS)
    assert rows["synthetic:defect-too_small-00"]["reason"] == "too small: 19x14 < 48"
    taxa = dict(zip(records["record_id"], records["taxon"]))
    pair = rows["synthetic:defect-label_conflict-00"]
    first, second = taxa["synthetic:defect-label_conflict-00"], taxa["synthetic:defect-label_conflict-01"]
    assert (
        first != second
        and pair["reason"] == f"label conflict: same photo listed as {' and '.join(sorted([first, second]))}"
    )


def test_near_duplicates_point_to_their_kept_original(pipeline):
    records, _, rows = pipeline
    for n in range(DEFECTS["near_duplicate"]):
        rid = f"synthetic:defect-near_duplicate-{n:02d}"
        original = synthetic.decode_url(records.set_index("record_id").loc[rid, "media_url"])[1]["copy_of"]
        kept = rows[original]
        assert kept["kept"] and rows[rid]["duplicate_of"] == kept["sha256"]
        assert rows[rid]["reason"] == f"near duplicate: of {kept['sha256']} (its largest copy, kept)"
        assert rows[rid]["group"] == kept["group"]


def test_photos_of_one_occurrence_are_kept_in_one_group(pipeline):
    records, _, rows = pipeline
    mine = [r for r in records["record_id"] if planted.kind_of(r) == "same_occurrence"]
    assert len(mine) == 3
    assert set(records.set_index("record_id").loc[mine, "occurrence_id"]) == {synthetic_defects.SAME_OCCURRENCE}
    assert all(rows[r]["kept"] and rows[r]["reason"] == "" for r in mine)
    assert len({rows[r]["group"] for r in mine}) == 1 and len({rows[r]["sha256"] for r in mine}) == 3


def test_each_ordinary_photo_is_its_own_group_but_for_the_originals_of_near_copies(pipeline):
    records, _, rows = pipeline
    ordinary = [r for r in records["record_id"] if not planted.kind_of(r)]
    assert len({rows[r]["group"] for r in ordinary}) == len(ordinary)


def test_without_defects_nothing_is_planted():
    plain = spec(defects={})
    del plain["defects"]
    records, _ = sources.list_source("synthetic", plain, sources.Context("synthetic", seed=1))
    assert not records["record_id"].str.contains("defect").any()
    assert len(records) == sum(COUNTS.values())
    zero, _ = sources.list_source("synthetic", spec(defects={"html": 0}), sources.Context("synthetic", seed=1))
    assert zero["record_id"].tolist() == records["record_id"].tolist()


def test_planting_is_deterministic_and_leaves_ordinary_records_alone():
    patterns = synthetic.load_patterns(REPO / "config/synthetic_species.tsv")
    realism = synthetic_scene.check_realism(spec())
    a = synthetic.list_records(patterns, COUNTS, 3, SIZE, realism, DEFECTS)
    b = synthetic.list_records(patterns, COUNTS, 3, SIZE, realism, DEFECTS)
    plain = synthetic.list_records(patterns, COUNTS, 3, SIZE, realism)
    assert a == b and a[: len(plain)] == plain
    assert synthetic.served_bytes(a[-1]["media_url"]) == synthetic.served_bytes(b[-1]["media_url"])


@pytest.mark.parametrize(
    "defects, message",
    [
        ({"postcard": 1}, "unknown defect kind 'postcard'"),
        ({"html": -1}, r"defects.html: -1 must be a whole number >= 0"),
        ({"html": 1.5}, r"defects.html: 1.5 must be a whole number"),
        (["html"], "must map defect kinds to counts"),
    ],
)
def test_bad_defects_are_named(defects, message):
    with pytest.raises(ValueError, match=message):
        synthetic_defects.check_defects(defects)


def test_a_label_conflict_needs_two_species():
    patterns = synthetic.load_patterns(REPO / "config/synthetic_species.tsv")
    with pytest.raises(ValueError, match="label_conflict: needs photos of two species"):
        synthetic.list_records(patterns, {"Amphiprion clarkii": 2}, 1, SIZE, None, {"label_conflict": 1})


def test_the_shipped_exclusions_name_the_demo_excluded_records():
    exclusions = read_table(REPO / DEMO["clean"]["exclusions"])
    wanted = {
        synthetic_defects.record_id("excluded", n) for n in range(DEMO["sources"]["synthetic"]["defects"]["excluded"])
    }
    assert wanted <= set(exclusions["id"])
    assert pd.Series(list(wanted)).isin(exclusions["id"]).all()
