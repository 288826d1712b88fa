import io
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from PIL import Image

from fishid.clean import stage as clean
from fishid.download import fetch
from fishid.tables import RECORD_COLUMNS, write_table

DEMO_CLEAN = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["clean"]
SETTINGS = {**DEMO_CLEAN, "min_side": 32, "max_side": 128}


def seed_mini_records(seed_mini):
    rows = []
    for path in sorted(seed_mini.rglob("*.*")):
        taxon = path.parent.name.replace("_", " ")
        rows.append(
            {"record_id": f"seed:{path.parent.parent.name}/{path.name}", "taxon": taxon, "media_url": path.as_uri()}
        )
    return pd.DataFrame(rows).reindex(columns=RECORD_COLUMNS, fill_value="")


def records_for(paths: dict[str, Path], taxon="Amphiprion clarkii", **columns) -> pd.DataFrame:
    table = pd.DataFrame({"record_id": list(paths), "taxon": taxon, "media_url": [p.as_uri() for p in paths.values()]})
    return table.assign(**columns).reindex(columns=RECORD_COLUMNS, fill_value="")


def run_clean(tmp_path, records, exclusions="", **settings):
    store_root = tmp_path / "store"
    # The records are the test's own files, wherever they lie.
    downloads = fetch.fetch_all(records, store_root, tmp_path / "journal", local_roots=["/"])
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
        {**SETTINGS, **settings},
        threads=2,
    )
    return table, downloads


def by_record(table, downloads):
    """Clean rows keyed by record id."""
    rows = table.set_index("sha256")
    return {r: rows.loc[s] for r, s in zip(downloads["record_id"], downloads["sha256"]) if s}


def near_copy(path: Path, target: Path, crop=0.01, scale=0.7, quality=70) -> Path:
    """Re-encoded, resized and slightly cropped (top and left): what a second website makes of a photo.

    At max_distance 12, crops up to 1 % are always found on seed-mini, 1.5 % mostly
    (bench/results/near_duplicates.md has the curve)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    w, h = image.size
    image = image.crop((round(w * crop), round(h * crop), w, h))
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="JPEG", quality=quality)
    return target


def test_every_seed_mini_image_is_kept_as_rgb_or_dropped_with_a_reason(tmp_path, seed_mini):
    records = seed_mini_records(seed_mini)
    table, downloads = run_clean(tmp_path, records)
    assert (downloads["error"] == "").all()
    assert set(table["sha256"]) == set(downloads["sha256"]) and len(table) == len(records)
    for row in table.to_dict("records"):
        # Every image decoded; its derived copy is RGB, within max_side, even when dropped.
        with Image.open(tmp_path / "derived" / row["derived_path"]) as image:
            assert image.mode == "RGB" and max(image.size) <= 128
        assert row["kept"] == (row["reason"] == "")
    gif = table[table["format"] == "GIF"].iloc[0]
    # The GIF is a palette drawing (15 colours), not a photo: dropped, and said so.
    assert gif["mode"] == "P" and not gif["kept"]
    assert gif["reason"] == "not a photo: few colours (15 < 128)"
    # Every other seed-mini picture is a real, distinct photo: all kept, no false near duplicate.
    assert table["kept"].sum() == len(table) - 1
    assert (table["near_duplicate_cluster"] == "").all() and table["group"].is_unique


def test_without_the_non_photo_flags_the_gif_is_kept_as_rgb(tmp_path, seed_mini):
    gif = next(seed_mini.rglob("*.gif"))
    table, _ = run_clean(tmp_path, records_for({"r:gif": gif}), non_photo={})
    row = table.iloc[0]
    assert row["kept"] and row["format"] == "GIF" and (row["width"], row["height"]) == (640, 480)
    with Image.open(tmp_path / "derived" / row["derived_path"]) as image:
        assert image.mode == "RGB" and image.size == (128, 96)


def test_same_photo_under_two_species_is_a_label_conflict(tmp_path, seed_mini):
    records = seed_mini_records(seed_mini)
    planted = records.iloc[[0]].assign(record_id="planted:copy", taxon="Amphiprion perideraion")
    assert records.iloc[0]["taxon"] == "Amphiprion clarkii"
    table, downloads = run_clean(tmp_path, pd.concat([records, planted]))
    sha = downloads.loc[downloads["record_id"] == "planted:copy", "sha256"].item()
    row = table[table["sha256"] == sha].iloc[0]
    assert not row["kept"]
    assert row["reason"] == "label conflict: same photo listed as Amphiprion clarkii and Amphiprion perideraion"
    assert row["listed_as"] == "Amphiprion clarkii|Amphiprion perideraion"
    assert set(row["record_ids"].split(",")) == {"planted:copy", records.iloc[0]["record_id"]}
    assert table["kept"].sum() == len(table) - 2  # the conflict and the GIF drawing


def test_planted_near_duplicates_of_every_seed_mini_photo_are_found(tmp_path, seed_mini):
    originals = {f"orig:{p.name}": p for p in sorted(seed_mini.rglob("*.jpg"))}
    copies = {f"copy:{p.name}": near_copy(p, tmp_path / "copies" / p.name) for p in originals.values()}
    records = pd.concat([records_for(originals), records_for(copies)])
    table, downloads = run_clean(tmp_path, records)
    rows = by_record(table, downloads)
    for name in (p.name for p in originals.values()):
        original, copy = rows[f"orig:{name}"], rows[f"copy:{name}"]
        assert original["kept"], name
        assert not copy["kept"] and copy["duplicate_of"] == original.name, name
        assert copy["reason"] == f"near duplicate: of {original.name} (its largest copy, kept)"
        assert copy["near_duplicate_cluster"] == original["near_duplicate_cluster"] != ""
        assert copy["group"] == original["group"]
    # No two different photos were taken for copies of each other.
    assert table["near_duplicate_cluster"].value_counts().eq(2).all()


def test_a_near_duplicate_under_another_species_is_a_conflict_and_keep_all_groups_copies(tmp_path, seed_mini):
    photo, other = sorted(seed_mini.rglob("Amcla_*.jpg"))[:2]
    copy = near_copy(photo, tmp_path / "copy.jpg", scale=0.5, quality=60)
    records = pd.concat(
        [
            records_for({"fishbase:a": photo, "fishbase:b": other}),
            records_for({"gbif:copy": copy}, taxon="Amphiprion perideraion"),
        ]
    )
    table, downloads = run_clean(tmp_path, records)
    rows = by_record(table, downloads)
    for record in ("fishbase:a", "gbif:copy"):
        assert not rows[record]["kept"]
        assert rows[record]["reason"].startswith(
            "label conflict: near-duplicate or same-occurrence photos (group "
        ) and rows[record]["reason"].endswith(
            "listed as Amphiprion clarkii (1 record) and Amphiprion perideraion (1 record)"
        )
    assert rows["fishbase:b"]["kept"]

    # Same species, keep: all -> both copies kept, in one group.
    records.loc[records["record_id"] == "gbif:copy", "taxon"] = "Amphiprion clarkii"
    table, downloads = run_clean(tmp_path / "all", records, near_duplicates={"max_distance": 12, "keep": "all"})
    rows = by_record(table, downloads)
    assert rows["fishbase:a"]["kept"] and rows["gbif:copy"]["kept"]
    assert rows["fishbase:a"]["group"] == rows["gbif:copy"]["group"] != rows["fishbase:b"]["group"]


def test_majority_rule_keeps_the_species_most_records_name(tmp_path, seed_mini):
    photo = sorted(seed_mini.rglob("*.jpg"))[0]
    records = pd.concat(
        [
            records_for({"a:1": photo, "a:2": photo}, taxon="Amphiprion clarkii"),
            records_for({"b:1": photo}, taxon="Amphiprion perideraion"),
        ]
    )
    table, _ = run_clean(tmp_path, records, conflicts="majority")
    row = table.iloc[0]
    assert row["kept"] and row["taxon"] == "Amphiprion clarkii"
    assert row["reason"] == (
        "label conflict resolved by majority: same photo listed as "
        "Amphiprion clarkii (2 records) and Amphiprion perideraion (1 record)"
    )


def test_excluding_the_wrong_record_resolves_a_conflict(tmp_path, seed_mini):
    photo = sorted(seed_mini.rglob("*.jpg"))[0]
    records = pd.concat([records_for({"a:1": photo}), records_for({"b:1": photo}, taxon="Amphiprion perideraion")])
    table, _ = run_clean(tmp_path, records, exclusions="b:1\tmislabelled on the source site\n")
    assert table.iloc[0]["kept"] and table.iloc[0]["taxon"] == "Amphiprion clarkii"


def test_photos_of_one_occurrence_share_a_group(tmp_path, seed_mini):
    photos = sorted(seed_mini.rglob("gbif_*.jpg"))[:3]
    records = records_for(dict(zip(["g:1", "g:2", "g:3"], photos)), occurrence_id=["occ-7", "occ-7", ""])
    table, downloads = run_clean(tmp_path, records)
    rows = by_record(table, downloads)
    assert rows["g:1"]["group"] == rows["g:2"]["group"] == min(rows["g:1"].name, rows["g:2"].name)
    assert rows["g:3"]["group"] == rows["g:3"].name


def test_source_filters_basis_of_record_and_preparations(tmp_path, seed_mini):
    photos = sorted(seed_mini.rglob("*.jpg"))[:4]
    records = records_for(
        dict(zip(["s:specimen", "s:etoh", "s:live", "s:fossil"], photos)),
        basis_of_record=["PRESERVED_SPECIMEN", "PreservedSpecimen", "HUMAN_OBSERVATION", "FossilSpecimen"],
        preparations=["", "EtOH - 1", "", ""],
    )
    table, downloads = run_clean(tmp_path, records)
    reasons = {r: row["reason"] for r, row in by_record(table, downloads).items()}
    assert reasons == {
        "s:specimen": "basis of record: PRESERVED_SPECIMEN (a preserved specimen, not a live fish)",
        "s:etoh": "basis of record: PRESERVED_SPECIMEN (a preserved specimen, not a live fish)",
        "s:live": "",
        "s:fossil": "basis of record: FOSSIL_SPECIMEN (a fossil)",
    }
    records["basis_of_record"] = ""
    table, downloads = run_clean(tmp_path / "again", records)
    assert by_record(table, downloads)["s:etoh"]["reason"] == "preparations: EtOH - 1 (a specimen in preservative)"


def drawing() -> Image.Image:
    image = Image.new("RGB", (300, 200), "white")
    image.paste((240, 120, 30), (40, 50, 260, 150))
    image.paste((250, 250, 250), (110, 50, 130, 150))
    return image


def test_non_photos_are_flagged(tmp_path, seed_mini):
    source = tmp_path / "in"
    source.mkdir()
    drawing().save(source / "drawing.png")
    with Image.open(sorted(seed_mini.rglob("*.jpg"))[0]) as photo:
        photo.convert("L").save(source / "greyscale.jpg")
    photo = sorted(seed_mini.rglob("*.jpg"))[1]
    records = records_for({"d": source / "drawing.png", "g": source / "greyscale.jpg", "p": photo})
    table, downloads = run_clean(tmp_path, records)
    reasons = {r: row["reason"] for r, row in by_record(table, downloads).items()}
    assert reasons["p"] == ""
    assert reasons["d"] == "not a photo: few colours (2 < 128); large flat areas (97% of pixels > 85%)"
    assert reasons["g"].startswith("not a photo: greyscale (mid-tone chroma 0 < 5)")


def test_broken_small_and_excluded_images_say_why(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.effect_noise((100, 80), 60).convert("RGB").save(source / "good.jpg")
    Image.effect_noise((100, 80), 50).convert("RGB").save(source / "excluded.jpg")
    Image.effect_noise((20, 80), 60).convert("RGB").save(source / "small.png")
    data = io.BytesIO()
    Image.effect_noise((100, 80), 40).convert("RGB").save(data, format="JPEG")
    (source / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    names = ["good.jpg", "excluded.jpg", "small.png", "truncated.jpg"]
    records = records_for({f"r:{n}": source / n for n in names})
    table, downloads = run_clean(tmp_path, records, exclusions="r:excluded.jpg\ta drawing, not a photo\n", non_photo={})
    reasons = {r: row["reason"] for r, row in by_record(table, downloads).items()}
    assert reasons["r:good.jpg"] == ""
    assert reasons["r:excluded.jpg"] == "excluded by user: a drawing, not a photo"
    assert reasons["r:small.png"] == "too small: 20x80 < 32"
    assert reasons["r:truncated.jpg"].startswith("undecodable:")


def test_exclusions_without_a_reason_are_refused(tmp_path):
    (tmp_path / "exclusions.tsv").write_text("id\treason\nabc\t\n")
    with pytest.raises(ValueError, match="give a reason for every exclusion .missing for abc"):
        clean.read_exclusions(tmp_path / "exclusions.tsv")


def test_a_bad_preparations_pattern_is_named(tmp_path, seed_mini):
    records = records_for({"r": sorted(seed_mini.rglob("*.jpg"))[0]})
    with pytest.raises(ValueError, match=r"clean.drop_preparations: 'etoh\(' is not a regular expression"):
        run_clean(tmp_path, records, drop_preparations={"etoh(": "bad"})


def test_a_run_that_keeps_nothing_fails_loudly(tmp_path):
    source = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(source)
    with pytest.raises(ValueError, match="cleaning kept no image out of 1; reasons: {'too small': 1}"):
        run_clean(tmp_path, records_for({"r:1": source}))
