"""Tests for the offline synthetic clownfish source."""

import json
from pathlib import Path

import numpy as np
import pytest

from fishid.sources import synthetic

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
        assert payload["pattern"] == patterns["Amphiprion ocellaris"]
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
