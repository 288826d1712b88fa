"""Tests for the offline synthetic clownfish source."""

import hashlib
import io
import json
import os
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fishid.clean import near_duplicates, photo_filters
from fishid.clean.decode import decode
from fishid.sources import synthetic, synthetic_render, synthetic_scene, synthetic_sheet
from fishid.tables import RANKS

TABLE = Path(__file__).resolve().parents[2] / "config" / "synthetic_species.tsv"
STUDY = ["Amphiprion clarkii", "Amphiprion perideraion", "Amphiprion ocellaris", "Amphiprion frenatus"]
HEADER = "\t".join(synthetic.PATTERN_COLUMNS)
GOOD_ROW = "Amphiprion clarkii\t3\t0.07\t0.008\t#2e1c12\t#f2a21e\t#efdc9c"


@pytest.fixture(scope="module")
def patterns():
    return synthetic.load_patterns(TABLE)


def pixels(img):
    return np.asarray(img, dtype=np.int16)


def test_shipped_table_has_study_species_and_enough_taxa(patterns):
    assert len(patterns) >= 13
    assert set(STUDY) <= set(patterns)
    clarkii = patterns["Amphiprion clarkii"]
    assert clarkii["bars"] == 3 and clarkii["body_color"].startswith("#")
    assert isinstance(clarkii["bar_width"], float)


def test_render_is_deterministic_and_url_round_trips(patterns):
    records = synthetic.list_records(patterns, {"Amphiprion ocellaris": 3}, seed=7, size=(96, 72))
    for rec in records:
        assert rec["media_url"].startswith("synthetic:")
        payload = json.loads(rec["media_url"][len("synthetic:") :])
        assert payload["pattern"] == {k: patterns["Amphiprion ocellaris"][k] for k in synthetic.PATTERN_COLUMNS}
        assert payload["size"] == [96, 72]
        a = synthetic.render_url(rec["media_url"])
        b = synthetic.render_url(rec["media_url"])
        c = synthetic.render(payload["pattern"], payload["params"], (96, 72))
        assert a.mode == "RGB" and a.size == (96, 72)
        assert a.tobytes() == b.tobytes() == c.tobytes()
    # Different images of one species are different pictures.
    assert (
        synthetic.render_url(records[0]["media_url"]).tobytes()
        != synthetic.render_url(records[1]["media_url"]).tobytes()
    )


def test_sample_params_is_json_serialisable_and_seeded(patterns):
    pattern = patterns["Amphiprion clarkii"]
    p1 = synthetic.sample_params(pattern, np.random.default_rng(1))
    p2 = synthetic.sample_params(pattern, np.random.default_rng(1))
    assert p1 == p2
    assert json.loads(json.dumps(p1)) == p1
    assert -25 <= p1["angle"] <= 25 and 0.5 <= p1["scale"] <= 0.9
    assert 0 <= p1["blur"] <= 1.5 and 0 <= p1["noise"] <= 8
    assert p1["background"] in synthetic.BACKGROUNDS


def test_list_records_fields_and_order(patterns):
    counts = {"Amphiprion frenatus": 2, "Amphiprion clarkii": 3}
    records = synthetic.list_records(patterns, counts, seed=1)
    assert [r["taxon"] for r in records] == ["Amphiprion frenatus"] * 2 + ["Amphiprion clarkii"] * 3
    first = records[0]
    assert first["record_id"] == "synthetic:Amphiprion_frenatus-00000"
    assert first["occurrence_id"] == first["record_id"]
    assert first["source"] == "synthetic" and first["source_taxon"] == first["taxon"]
    assert first["license"] == "CC0-1.0" and first["basis_of_record"] == "MachineObservation"
    assert first["dataset_key"] == "synthetic" and first["page_url"] == ""
    assert first["creator"] == "fishid synthetic generator v1"
    assert first["rights_holder"] == "fishid contributors"
    assert records[-1]["record_id"] == "synthetic:Amphiprion_clarkii-00002"


def test_list_records_stable_when_species_added_or_counts_change(patterns):
    base = synthetic.list_records(patterns, {"Amphiprion clarkii": 4, "Amphiprion frenatus": 3}, seed=3)
    more = synthetic.list_records(
        patterns, {"Amphiprion ocellaris": 5, "Amphiprion clarkii": 6, "Amphiprion frenatus": 3}, seed=3
    )
    by_id = {r["record_id"]: r for r in more}
    assert len(by_id) == len(more)  # ids unique
    for rec in base:
        assert by_id[rec["record_id"]] == rec
    other_seed = synthetic.list_records(patterns, {"Amphiprion clarkii": 4}, seed=4)
    assert other_seed[0]["media_url"] != base[0]["media_url"]


def test_unknown_taxon_names_it_and_known_ones(patterns):
    with pytest.raises(ValueError, match="Amphiprion nemo") as err:
        synthetic.list_records(patterns, {"Amphiprion nemo": 2}, seed=0)
    assert "Amphiprion clarkii" in str(err.value)


def body_colour(pattern, params, size=(96, 72)):
    """Mean RGB of the pixels the fish fully covers."""
    img = pixels(synthetic.render(pattern, params, size)).astype(float)
    _, alpha = synthetic._fish_layer(pattern, params, *size)
    inside = alpha > 0.99
    assert inside.sum() > 100
    return img[inside].mean(axis=0)


def test_study_species_differ_in_fish_colour(patterns):
    means = {}
    for taxon in STUDY:
        recs = synthetic.list_records(patterns, {taxon: 20}, seed=11, size=(96, 72))
        cols = [body_colour(patterns[taxon], json.loads(r["media_url"][10:])["params"]) for r in recs]
        means[taxon] = np.mean(cols, axis=0)
    for i, a in enumerate(STUDY):
        for b in STUDY[i + 1 :]:
            assert np.abs(means[a] - means[b]).max() > 25, (a, b, means[a], means[b])
    # Dark clarkii (least red), pink perideraion (most blue), red frenatus (least green).
    assert means["Amphiprion clarkii"][0] < min(means[t][0] for t in STUDY[1:]) - 40
    assert means["Amphiprion perideraion"][2] == max(means[t][2] for t in STUDY)
    assert means["Amphiprion frenatus"][1] == min(means[t][1] for t in STUDY[1:])


def test_same_pose_different_species_differ_visibly(patterns):
    rng = np.random.default_rng(5)
    params = synthetic.sample_params(patterns["Amphiprion ocellaris"], rng)
    params.update(blur=0.0, noise=0.0)
    ocellaris = pixels(synthetic.render(patterns["Amphiprion ocellaris"], params))
    percula = pixels(synthetic.render(patterns["Amphiprion percula"], params))
    clarkii = pixels(synthetic.render(patterns["Amphiprion clarkii"], params))
    close, far = np.abs(ocellaris - percula).mean(), np.abs(ocellaris - clarkii).mean()
    assert 0 < close < far  # ocellaris/percula differ only a little (margins), clarkii a lot


def write_table(tmp_path, *rows, header=HEADER):
    path = tmp_path / "species.tsv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "row, column",
    [
        (GOOD_ROW.replace("\t3\t", "\t7\t"), "bars"),
        (GOOD_ROW.replace("\t3\t", "\tthree\t"), "bars"),
        (GOOD_ROW.replace("#2e1c12", "orange"), "body_color"),
        (GOOD_ROW.replace("#efdc9c", "#efdc9"), "tail_color"),
        (GOOD_ROW.replace("0.07", "0.5"), "bar_width"),
        (GOOD_ROW.replace("0.008", "x"), "bar_margin"),
    ],
)
def test_bad_row_names_file_line_and_column(tmp_path, row, column):
    other = "Amphiprion ocellaris\t3\t0.10\t0.008\t#f27413\t#f07a1c\t#f07a1e"
    path = write_table(tmp_path, other, row)
    with pytest.raises(ValueError) as err:
        synthetic.load_patterns(path)
    message = str(err.value)
    assert str(path) in message and "line 3" in message and column in message


def test_bad_header_and_short_row(tmp_path):
    with pytest.raises(ValueError, match="stripes"):
        synthetic.load_patterns(write_table(tmp_path, GOOD_ROW + "\t1", header=HEADER + "\tstripes"))
    with pytest.raises(ValueError, match="tail_color"):
        synthetic.load_patterns(write_table(tmp_path, GOOD_ROW, header=HEADER.replace("\ttail_color", "")))
    with pytest.raises(ValueError, match="line 2"):
        synthetic.load_patterns(write_table(tmp_path, GOOD_ROW.rsplit("\t", 1)[0]))
    with pytest.raises(ValueError, match="duplicate"):
        synthetic.load_patterns(write_table(tmp_path, GOOD_ROW, GOOD_ROW))


def test_render_url_rejects_other_urls():
    with pytest.raises(ValueError, match="synthetic"):
        synthetic.render_url("https://example.org/fish.jpg")
    with pytest.raises(ValueError, match="malformed"):
        synthetic.render_url("synthetic:{not json")


# --------------------------------------------------------------------------- v1 stays v1

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())
DEMO_SPEC = DEMO["sources"]["synthetic"]
REALISM = synthetic_scene.check_realism(DEMO_SPEC)
# The media_urls of these three v1 records, as the generator made them before scenes,
# nuisances, individuals and defects existed (tests/config/tiny.yaml and others rely on them).
V1_URLS_SHA256 = "e35583d93b6a8d5cab7a526070b89c32102709ab7956c40b76455d6f57137dac"


def test_without_the_new_keys_the_pictures_are_the_v1_ones(patterns, tmp_path):
    records = synthetic.list_records(patterns, {"Amphiprion clarkii": 2, "Amphiprion frenatus": 1}, 7, (96, 72))
    assert hashlib.sha256("".join(r["media_url"] for r in records).encode()).hexdigest() == V1_URLS_SHA256
    assert {r["creator"] for r in records} == {synthetic.GENERATOR}
    # The optional columns of the table change nothing without `individuals` but the records' ranks.
    stripped = [line.split("\t")[:7] for line in TABLE.read_text().splitlines()]
    (tmp_path / "plain.tsv").write_text("\n".join("\t".join(cells) for cells in stripped) + "\n")
    plain = synthetic.load_patterns(tmp_path / "plain.tsv")
    unranked = [{key: value for key, value in record.items() if key not in RANKS} for record in records]
    assert synthetic.list_records(plain, {"Amphiprion clarkii": 2, "Amphiprion frenatus": 1}, 7, (96, 72)) == unranked
    for record in records:
        pattern, params, size = synthetic.decode_url(record["media_url"])
        assert not {"scene", "style", "serve", "jpeg_quality", "defect"} & set(params)
        v1 = synthetic_render.render(pattern, params, size)
        assert synthetic.render_url(record["media_url"]).tobytes() == v1.tobytes()
        buffer = io.BytesIO()
        v1.save(buffer, format="JPEG", quality=90)
        assert synthetic.served_bytes(record["media_url"]) == buffer.getvalue()
    listing = synthetic.source_listing(
        {"patterns": str(TABLE), "size": [96, 72], "counts": {"Amphiprion clarkii": 2, "Amphiprion frenatus": 1}},
        type("Context", (), {"name": "synthetic", "seed": 7})(),
    )
    assert listing.records == records


def test_realism_is_deterministic_and_marked_v2(patterns):
    counts = {"Amphiprion clarkii": 6, "Amphiprion ocellaris": 6}
    a = synthetic.list_records(patterns, counts, 5, (96, 72), REALISM)
    b = synthetic.list_records(patterns, counts, 5, (96, 72), REALISM)
    assert a == b and {r["creator"] for r in a} == {synthetic.GENERATOR_V2}
    assert [r["record_id"] for r in a] == [r["record_id"] for r in synthetic.list_records(patterns, counts, 5)]
    for record in a[:4]:
        assert synthetic.served_bytes(record["media_url"]) == synthetic.served_bytes(record["media_url"])
    # The pose is the v1 one unless the scene changes it.
    v1 = synthetic.list_records(patterns, counts, 5, (96, 72))
    for old, new in zip(v1, a):
        old_params, new_params = synthetic.decode_url(old["media_url"])[1], synthetic.decode_url(new["media_url"])[1]
        assert new_params["seed"] == old_params["seed"] and new_params["flip"] == old_params["flip"]


def forced(pattern, scene="anemone", nuisances=(), n=4, seed=0, individuals=True):
    realism = {"individuals": individuals, "scenes": {scene: 1}, "nuisances": dict.fromkeys(nuisances, 1.0)}
    return [
        synthetic_scene.sample_photo(
            pattern, realism, np.random.default_rng([seed, i]), np.random.default_rng([seed, i, 1])
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("scene", synthetic_scene.SCENES)
def test_each_scene_renders_and_passes_the_demo_non_photo_filters(patterns, scene):
    rows = []
    for taxon in STUDY:
        for fish, params in forced(patterns[taxon], scene, n=3):
            assert params["scene"] == scene
            image = Image.open(io.BytesIO(synthetic.served_bytes(synthetic.encode_url(fish, params, (160, 120)))))
            assert image.size == (160, 120)
            rows.append(
                photo_filters.measure(decode(synthetic.served_bytes(synthetic.encode_url(fish, params)), 10**8).image)
            )
    flags = photo_filters.non_photo_reasons(pd.DataFrame(rows), DEMO["clean"]["non_photo"])
    assert (flags == "").all(), flags[flags != ""].tolist()


@pytest.mark.parametrize("nuisance", synthetic_scene.NUISANCES)
def test_each_nuisance_lands_in_the_params_and_changes_the_picture(patterns, nuisance):
    key = {"colour_cast": "cast", "school": "fish", "occlusion": "occluder", "defocus": "defocus"}
    key |= {"motion_blur": "motion", "jpeg": "jpeg_quality"}
    pattern = patterns["Amphiprion ocellaris"]
    plain = forced(pattern, n=2, seed=3)
    with_it = forced(pattern, nuisances=[nuisance], n=2, seed=3)
    for (fish, before), (_, after) in zip(plain, with_it):
        assert key[nuisance] in after and key[nuisance] not in before
        assert synthetic.served_bytes(synthetic.encode_url(fish, before)) != synthetic.served_bytes(
            synthetic.encode_url(fish, after)
        )
    # Never underwater nuisances on a studio photo.
    for _, params in forced(pattern, "studio_white", ["colour_cast", "occlusion"], n=2):
        assert "cast" not in params and "occluder" not in params


def test_changing_one_probability_changes_only_the_pictures_that_gain_it(patterns):
    counts = {"Amphiprion clarkii": 30}
    low = synthetic.list_records(patterns, counts, 1, (96, 72), REALISM)
    higher = synthetic_scene.check_realism(DEMO_SPEC | {"nuisances": DEMO_SPEC["nuisances"] | {"jpeg": 0.9}})
    high = synthetic.list_records(patterns, counts, 1, (96, 72), higher)
    changed = 0
    for a, b in zip(low, high):
        pa, pb = synthetic.decode_url(a["media_url"])[1], synthetic.decode_url(b["media_url"])[1]
        pb.pop("jpeg_quality", None)
        if "jpeg_quality" not in pa:
            changed += a["media_url"] != b["media_url"]
            assert pa == pb
    assert changed > 5


def test_individuals_vary_within_the_table_ranges(patterns):
    clarkii = patterns["Amphiprion clarkii"]
    fish = [f for f, _ in forced(clarkii, n=200)]
    bars = {f["bars"] for f in fish}
    lo, hi = clarkii["variation"]["bar_width_range"]
    assert bars == {2, 3} and all(lo <= f["bar_width"] <= hi for f in fish)
    morphs = pd.Series([f.get("morph", "") for f in fish]).value_counts()
    assert set(morphs.index) == {"", "dark", "orange"} and 15 < morphs["dark"] < 50 and 15 < morphs["orange"] < 50
    assert {f["body_color"] for f in fish if f.get("morph") == "dark"} == {"#1a100a"}
    assert all("morph" not in f for f, _ in forced(clarkii, n=20, individuals=False))


def test_the_orange_clarkii_looks_like_ocellaris_but_for_its_tail(patterns):
    """A look-alike pair among the demo's four species, told apart by one trait."""
    ocellaris = {k: patterns["Amphiprion ocellaris"][k] for k in synthetic.PATTERN_COLUMNS}
    orange = next(m for m in patterns["Amphiprion clarkii"]["variation"]["morphs"] if m["name"] == "orange")
    look_alike = ocellaris | {k: orange[k] for k in ("body_color", "fin_color", "tail_color")}
    assert (
        synthetic_render._hex(orange["tail_color"]).mean() - synthetic_render._hex(ocellaris["tail_color"]).mean()
        > 0.25
    )
    body = np.abs(synthetic_render._hex(orange["body_color"]) - synthetic_render._hex(ocellaris["body_color"]))
    assert body.max() < 0.1 and orange["fin_color"] == ocellaris["fin_color"]
    params = synthetic.sample_params(ocellaris, np.random.default_rng(2)) | {"blur": 0.0, "noise": 0.0}
    a, b = pixels(synthetic.render(ocellaris, params)), pixels(synthetic.render(look_alike, params))
    assert 0 < np.abs(a - b).mean() < 8


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("bar_counts", "7:0.1", "'7' is not a bar count 0-5"),
        ("bar_counts", "2:x", "'x' is not a share 0-1"),
        ("bar_counts", "2", "is not of the form count:share"),
        ("bar_counts", "2:0.6,1:0.6", "the shares add up to 1.2, more than 1"),
        ("bar_width_range", "0.2-0.1", "want 0.02 <= low <= high <= 0.15"),
        ("bar_width_range", "wide", "is not of the form low-high"),
        ("morphs", "dark:0.5:#123:#000000:#000000", "'#123' is not a colour"),
        ("morphs", "Dark:0.5:#000000:#000000:#000000", "'Dark' is not a morph name"),
        ("morphs", "dark:0.5:#000000", "is not of the form name:share:#body:#fin:#tail"),
    ],
)
def test_bad_optional_column_names_file_line_and_column(tmp_path, column, value, message):
    header = HEADER + "\t" + column
    path = write_table(tmp_path, GOOD_ROW + "\t" + value, header=header)
    with pytest.raises(ValueError, match=message) as err:
        synthetic.load_patterns(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and repr(column) in str(err.value)


def test_optional_columns_may_be_left_off_a_row(tmp_path):
    header = HEADER + "\tbar_counts\tbar_width_range\tmorphs"
    path = write_table(tmp_path, GOOD_ROW, GOOD_ROW.replace("clarkii", "nemo") + "\t\t0.05-0.08", header=header)
    patterns = synthetic.load_patterns(path)
    assert "variation" not in patterns["Amphiprion clarkii"]
    assert patterns["Amphiprion nemo"]["variation"] == {"bar_width_range": [0.05, 0.08]}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"scenes": {"moon": 1}}, "scenes: unknown scene 'moon'"),
        ({"scenes": {"dark": -1}}, r"scenes.dark: -1 must be a weight >= 0"),
        ({"scenes": {"dark": 0}}, "give at least one scene a weight above 0"),
        ({"nuisances": {"rain": 0.1}}, "nuisances: unknown nuisance 'rain'"),
        ({"nuisances": {"jpeg": 1.5}}, r"nuisances.jpeg: 1.5 must be a probability 0-1"),
        ({"individuals": "yes"}, "individuals: 'yes' must be true or false"),
    ],
)
def test_bad_realism_settings_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        synthetic_scene.check_realism(changes)


def test_the_schema_knows_the_new_keys():
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    source = schema["$defs"]["source_synthetic"]
    jsonschema.validate(DEMO_SPEC, source)
    for bad in ({"scenes": {"moon": 1}}, {"nuisances": {"jpeg": 2}}, {"defects": {"postcard": 1}}, {"realism": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(DEMO_SPEC | bad, source)


def listing_measures(counts):
    records = synthetic.list_records(
        synthetic.load_patterns(REPO / DEMO_SPEC["patterns"]), counts, DEMO["seed"], tuple(DEMO_SPEC["size"]), REALISM
    )
    rows = []
    for record in records:
        image = decode(synthetic.served_bytes(record["media_url"]), 10**8).image
        rows.append({"record_id": record["record_id"], "phash": near_duplicates.perceptual_hash(image)})
        rows[-1].update(photo_filters.measure(image))
    return pd.DataFrame(rows)


def check_clean_listing(counts):
    measures = listing_measures(counts)
    flags = photo_filters.non_photo_reasons(measures, DEMO["clean"]["non_photo"])
    assert (flags == "").all(), dict(zip(measures["record_id"][flags != ""], flags[flags != ""]))
    words = near_duplicates.hash_words(measures["phash"].tolist())
    i, j, d = near_duplicates.pairs_within(words, DEMO["clean"]["near_duplicates"]["max_distance"])
    assert len(i) == 0, list(zip(measures["record_id"][i], measures["record_id"][j], d))


def test_demo_photos_are_photos_and_no_two_are_near_duplicates():
    """A slice of the demo's listing (all of it: FISHID_FULL_SYNTHETIC_CHECK=1, ~30 s)."""
    counts = DEMO_SPEC["counts"]
    if not os.environ.get("FISHID_FULL_SYNTHETIC_CHECK"):
        counts = {taxon: min(n, 25) for taxon, n in list(counts.items())[:6]}
    check_clean_listing(counts)


def test_the_sheet_shows_every_scene_nuisance_and_defect(tmp_path):
    rows = synthetic_sheet.examples(DEMO_SPEC | {"patterns": str(REPO / DEMO_SPEC["patterns"])}, 1, per_row=1)
    titles = [title for title, _ in rows]
    for name in (*synthetic_scene.SCENES, *synthetic_scene.NUISANCES, *synthetic.DEFECTS):
        assert any(title.endswith(f": {name}") for title in titles), name
    assert all(pictures for _, pictures in rows)
    synthetic_sheet.write(synthetic_sheet.sheet(rows), tmp_path / "sheet.png")
    assert Image.open(tmp_path / "sheet.png").format == "PNG"


def test_the_readmes_photo_sheet_is_what_the_demo_config_renders(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names its pattern table relative to the checkout
    assert synthetic_sheet.main(["config/config.yaml", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").read_bytes() == (REPO / "docs/demo_photos.png").read_bytes(), (
        "docs/demo_photos.png is out of date: python -m fishid.sources.synthetic_sheet config/config.yaml "
        "docs/demo_photos.png"
    )
