import pandas as pd
import pytest
from PIL import Image

from fishid import clean, fetch
from fishid.tables import RECORD_COLUMNS, write_table


def seed_mini_records(seed_mini):
    rows = []
    for path in sorted(seed_mini.rglob("*.*")):
        taxon = path.parent.name.replace("_", " ")
        rows.append(
            {"record_id": f"seed:{path.parent.parent.name}/{path.name}", "taxon": taxon, "media_url": path.as_uri()}
        )
    return pd.DataFrame(rows).reindex(columns=RECORD_COLUMNS, fill_value="")


def run_clean(tmp_path, records, exclusions=""):
    store_root = tmp_path / "store"
    downloads = fetch.fetch_all(records, store_root, tmp_path / "journal")
    write_table(records, tmp_path / "records.tsv")
    write_table(downloads, tmp_path / "downloads.tsv")
    (tmp_path / "exclusions.tsv").write_text("id\treason\n" + exclusions)
    table = clean.run(
        [tmp_path / "records.tsv"],
        [tmp_path / "downloads.tsv"],
        tmp_path / "exclusions.tsv",
        store_root,
        tmp_path / "derived",
        tmp_path / "clean.tsv",
        min_side=32,
        max_side=128,
        threads=2,
    )
    return table, downloads


def test_every_seed_mini_image_is_kept_as_rgb_or_dropped_with_a_reason(tmp_path, seed_mini):
    records = seed_mini_records(seed_mini)
    table, downloads = run_clean(tmp_path, records)
    assert (downloads["error"] == "").all()
    assert set(table["sha256"]) == set(downloads["sha256"])
    for row in table.to_dict("records"):
        if row["kept"]:
            with Image.open(tmp_path / "derived" / row["derived_path"]) as image:
                assert image.mode == "RGB" and max(image.size) <= 128
        else:
            assert row["reason"]
    gif = table[table["format"] == "GIF"]
    assert len(gif) == 1 and gif["kept"].all()


def test_same_photo_under_two_species_is_a_label_conflict(tmp_path, seed_mini):
    records = seed_mini_records(seed_mini)
    planted = records.iloc[[0]].assign(record_id="planted:copy", taxon="Amphiprion perideraion")
    assert records.iloc[0]["taxon"] == "Amphiprion clarkii"
    table, downloads = run_clean(tmp_path, pd.concat([records, planted]))
    sha = downloads.loc[downloads["record_id"] == "planted:copy", "sha256"].item()
    row = table[table["sha256"] == sha].iloc[0]
    assert not row["kept"]
    assert row["reason"] == "label conflict: same photo listed as Amphiprion clarkii and Amphiprion perideraion"
    assert set(row["record_ids"].split(",")) == {"planted:copy", records.iloc[0]["record_id"]}
    assert table["kept"].sum() == len(table) - 1


def test_broken_small_and_excluded_images_say_why(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.new("RGB", (100, 80), "orange").save(source / "good.jpg")
    Image.new("RGB", (100, 80), "white").save(source / "excluded.jpg")
    Image.new("RGB", (20, 80), "orange").save(source / "small.png")
    Image.new("RGB", (100, 80), "red").save(source / "whole.jpg")
    data = (source / "whole.jpg").read_bytes()
    (source / "truncated.jpg").write_bytes(data[: len(data) // 2])
    names = ["good.jpg", "excluded.jpg", "small.png", "truncated.jpg"]
    records = pd.DataFrame(
        {
            "record_id": [f"r:{n}" for n in names],
            "taxon": "Amphiprion clarkii",
            "media_url": [(source / n).as_uri() for n in names],
        }
    ).reindex(columns=RECORD_COLUMNS, fill_value="")
    table, downloads = run_clean(tmp_path, records, exclusions="r:excluded.jpg\ta drawing, not a photo\n")
    reasons = dict(zip(downloads["record_id"], downloads["sha256"].map(dict(zip(table["sha256"], table["reason"])))))
    assert reasons["r:good.jpg"] == ""
    assert reasons["r:excluded.jpg"] == "excluded by user: a drawing, not a photo"
    assert reasons["r:small.png"] == "too small: 20x80 < 32"
    assert reasons["r:truncated.jpg"].startswith("undecodable:")


def test_exclusions_without_a_reason_are_refused(tmp_path):
    (tmp_path / "exclusions.tsv").write_text("id\treason\nabc\t\n")
    with pytest.raises(ValueError, match="give a reason for every exclusion .missing for abc"):
        clean.read_exclusions(tmp_path / "exclusions.tsv")


def test_a_run_that_keeps_nothing_fails_loudly(tmp_path):
    source = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(source)
    records = pd.DataFrame({"record_id": ["r:1"], "taxon": "Amphiprion clarkii", "media_url": [source.as_uri()]})
    with pytest.raises(ValueError, match="cleaning kept no image out of 1; reasons: {'too small': 1}"):
        run_clean(tmp_path, records.reindex(columns=RECORD_COLUMNS, fill_value=""))
