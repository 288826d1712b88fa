"""The report page (fishid.report.html and its template): escaping, the summary chart, the
inlined figures' size, and the embedding map's method chosen by the config."""

import base64
import html
import io
import json
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from PIL import Image

from fishid import cli
from fishid.config import ConfigError, validate, with_schema_defaults
from fishid.report import figures
from fishid.report import html as report
from fishid.report.figure_list import MODEL_FIGURES

HOSTILE = "<script>alert(1)</script>"
MODELS = ("RI2", "TL2", "TL2-random")


def metrics(name: str, accuracy: float) -> dict:
    species = {"Amphiprion clarkii": 0.9, "Amphiprion ocellaris": 0.8}
    return {
        "model": name,
        "evaluated_on": "test",
        "accuracy": accuracy,
        "accuracy_ci95": [accuracy - 0.1, min(1.0, accuracy + 0.05)],
        "balanced_accuracy": accuracy,
        "balanced_accuracy_ci95": [accuracy - 0.1, accuracy],
        "correct": round(20 * accuracy),
        "n": 20,
        "macro_f1": accuracy,
        "majority_baseline": 0.55,
        "learned_nothing": [],
        "calibration": {"ece": 0.05, "bins": []},
        "per_species": {
            label: {"n": 10, "correct": 9, "accuracy": a, "precision": a, "recall": a, "f1": a}
            for label, a in species.items()
        },
    }


def write_png(path, width: int, height: int, photo: bool) -> None:
    """A chart-like image (flat colours, lines) or a photo-like one (noise) of the given size."""
    rng = np.random.default_rng(0)
    if photo:
        coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    else:
        pixels = np.full((height, width, 3), 255, np.uint8)
        pixels[:, ::50] = (31, 119, 180)
        pixels[height // 2, :] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_table(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, sep="\t", index=False)
    return str(path)


def build_page(tmp_path, rights_holder: str = "A. Diver", creator: str = "B. Diver", label_issues=None) -> str:
    """The page of a run of three models, with the given credits on its photos."""
    records = pd.DataFrame(
        {
            "record_id": ["r1", "r2"],
            "source": ["folder", "folder"],
            "license": ["CC-BY-4.0", "CC-BY-4.0"],
            "taxon": ["Amphiprion clarkii", "Amphiprion ocellaris"],
            "rights_holder": [rights_holder, rights_holder],
            "creator": [creator, creator],
            "page_url": [f"https://example.org/{HOSTILE}", "https://example.org/2"],
        }
    )
    downloads = pd.DataFrame({"record_id": ["r1", "r2"], "sha256": ["a" * 64, "b" * 64], "error": ""})
    clean = pd.DataFrame({"sha256": ["a" * 64, "b" * 64], "kept": ["True", "False"], "reason": ["", "too small: 10"]})
    counts = pd.DataFrame({"label": ["Amphiprion clarkii"], "train": [8], "val": [1], "test": [1]})
    model_dirs = []
    for i, name in enumerate(MODELS):
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics(name, 0.9 - 0.2 * i)))
        pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.8]}).to_csv(folder / "history.csv", index=False)
        model_dirs.append(folder)
        for f in MODEL_FIGURES:
            write_png(tmp_path / "figures" / name / f"{f.stem}.png", 1200, 480, f.stem in report.PHOTO_FIGURES)
    config = {
        "report": {"title": "test report"},
        "models": {
            "RI2": {"arch": "ri", "dataset": "two"},
            "TL2": {"arch": "tl", "dataset": "two", "backbone": "pool"},
            "TL2-random": {"arch": "tl", "dataset": "two", "backbone": "random", "control_of": "TL2"},
        },
        "backbones": {"pool": {"description": "pre-trained on other species"}},
    }
    out = tmp_path / "index.html"
    report.build(
        config,
        [write_table(records, tmp_path / "records.tsv")],
        [write_table(downloads, tmp_path / "downloads.tsv")],
        write_table(clean, tmp_path / "clean.tsv"),
        [write_table(counts, tmp_path / "two.counts.tsv")],
        model_dirs,
        tmp_path / "figures",
        out,
        label_issues_path=label_issues,
    )
    return out.read_text()


def inlined_images(page: str) -> list[Image.Image]:
    sources = re.findall(r'<img src="data:image/(?:png|webp);base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(s))) for s in sources]


def test_a_hostile_rights_holder_creator_and_url_are_escaped(tmp_path):
    page = build_page(tmp_path, rights_holder=HOSTILE, creator='"><img src=x onerror=alert(1)>')
    assert "<script" not in page and "onerror=alert(1)>" not in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "https://example.org/&lt;script&gt;" in page


def test_the_page_opens_with_a_summary_chart_of_every_model(tmp_path):
    page = build_page(tmp_path)
    summary = page.index('<h2 id="summary">')
    assert summary < page.index('<h2 id="provenance">')
    chart = page[page.index("<svg", summary) : page.index("</svg>", summary)]
    for name in MODELS:
        assert re.search(rf">\s*{re.escape(name)}\s*</text>", chart), name


def test_the_summary_chart_lists_every_model_with_its_baseline():
    rows = [
        {"model": name, "accuracy": 0.8, "ci95": [0.7, 0.9], "majority_baseline": 0.5} for name in ("A", "B<&>", "C")
    ]
    svg = figures.svg_text(figures.summary_chart(rows))
    assert svg.startswith("<svg")
    # Text stays text (names searchable), escaped as XML.
    for name in ("A", "B&lt;&amp;&gt;", "C"):
        assert re.search(rf">\s*{re.escape(name)}\s*</text>", svg), name
    assert "majority baseline" in svg
    # The same chart twice is the same bytes (matplotlib's element ids are salted, not random):
    # a rerun's report equals the first run's.
    assert figures.svg_text(figures.summary_chart(rows)) == svg


def test_inlined_figures_are_at_display_width_and_the_files_stay_full_size(tmp_path):
    page = build_page(tmp_path)
    images = inlined_images(page)
    assert len(images) == len(MODELS) * len(MODEL_FIGURES)
    wide = {f.stem: f.wide for f in MODEL_FIGURES}
    expected = [report.WIDE_WIDTH if wide[f.stem] else report.NARROW_WIDTH for f in MODEL_FIGURES] * len(MODELS)
    assert [image.width for image in images] == expected
    assert {image.format for image in images} == {"PNG", "WEBP"}
    assert Image.open(tmp_path / "figures/RI2/curves.png").width == 1200
    # The <img> says its own size, so the page lays out before the images decode.
    assert f'width="{report.NARROW_WIDTH}" height="{round(480 * report.NARROW_WIDTH / 1200)}"' in page


def test_a_figure_narrower_than_its_place_is_not_enlarged(tmp_path):
    path = tmp_path / "small.png"
    write_png(path, 300, 200, photo=False)
    shown = report.display_image(path.read_bytes(), report.NARROW_WIDTH, photo=False)
    assert (shown["width"], shown["height"]) == (300, 200)
    assert Image.open(io.BytesIO(base64.b64decode(shown["src"].split(",", 1)[1]))).size == (300, 200)


def embedding_data(n=24):
    rng = np.random.default_rng(1)
    labels = np.array(["Amphiprion clarkii", "Amphiprion ocellaris"] * (n // 2))
    features = rng.normal(size=(n, 8)) + (labels == "Amphiprion clarkii")[:, None] * 4
    return {"features": features.astype(np.float32), "labels": labels}


def test_the_embedding_map_is_drawn_by_the_method_the_config_names(monkeypatch):
    fig = figures.embedding_map(embedding_data(), "RI2", "tsne")
    assert fig.axes[0].get_title() == "RI2: embeddings (t-SNE)"
    calls = []

    class UMAP:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, features):
            return np.zeros((len(features), 2))

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
    fig = figures.embedding_map(embedding_data(), "RI2", "umap")
    assert fig.axes[0].get_title() == "RI2: embeddings (UMAP)"
    assert calls == [{"n_neighbors": 15, "random_state": 0, "n_jobs": 1}]
    with pytest.raises(ValueError, match="unknown embedding map method 'pca'"):
        figures.embedding_map(embedding_data(), "RI2", "pca")


def test_umap_chosen_but_not_installed_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap then raises ImportError
    with pytest.raises(ImportError, match="umap-learn"):
        figures.embedding_points(embedding_data()["features"], "umap")


def test_the_map_method_defaults_to_tsne_in_the_schema_only_and_evaluate_is_told_it():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["report"].pop("embedding_map", None)
    assert with_schema_defaults(config)["report"]["embedding_map"] == "tsne"
    assert "embedding_map" not in config["report"]  # a copy is filled, not the caller's
    base = ["evaluate", "--name", "m", "--spec", "{}", "--weights", "w", "--cache", "c", "--split", "s"]
    base += ["--predictions", "p", "--metrics", "j", "--figure-data", "d", "--history", "h", "--figures", "f"]
    assert cli.parser().parse_args([*base, "--embedding-map", "umap"]).embedding_map == "umap"
    with pytest.raises(SystemExit):  # the rule always says which: no second default here
        cli.parser().parse_args(base)


def test_the_schema_accepts_tsne_and_umap_and_refuses_any_other_method():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for method in ("tsne", "umap"):
        validate({**config, "report": {**config["report"], "embedding_map": method}})
    with pytest.raises(ConfigError, match="report.embedding_map"):
        validate({**config, "report": {**config["report"], "embedding_map": "pca"}})


def test_the_cleaning_section_counts_what_the_download_and_the_cleaning_left_out():
    records = pd.DataFrame(
        {
            "record_id": ["a", "b", "c", "d", "e"],
            "source": "web",
            "license": "CC0-1.0",
            "taxon": "Amphiprion clarkii",
            "rights_holder": "",
            "creator": "",
            "page_url": "",
        }
    )
    downloads = pd.DataFrame(
        {
            "record_id": ["a", "b", "c", "d", "e"],
            "sha256": ["1", "2", "3", "", ""],
            "error": ["", "", "", "licence not allowed: CC-BY-ND", "not an image: 80 bytes, HTML or XML"],
        }
    )
    clean = pd.DataFrame(
        {
            "sha256": ["1", "2", "3"],
            "kept": ["True", "False", "False"],
            "reason": ["", "not a photo: greyscale", "not a photo: few colours; flat areas"],
        }
    )
    section = report.provenance(records, downloads, clean)
    assert (section["listed"], section["stored"], section["kept"]) == (5, 3, 1)
    assert section["dropped"]["rows"] == [
        ["download", "licence not allowed", "1"],
        ["download", "not an image", "1"],
        ["cleaning", "not a photo", "2"],
    ]


def test_the_cross_source_table_marks_unseen_sources_and_too_few_photos(tmp_path):
    def scores(n, correct, too_few=False):
        return {"n": n, "correct": correct, "accuracy": correct / n, "accuracy_ci95": [0.5, 0.9], "too_few": too_few}

    pooled = {"trained_on": ["field", "museum"], "by_source": {"field": scores(40, 32), "museum": scores(8, 6, True)}}
    unseen = {"trained_on": ["field"], "by_source": {"museum": scores(60, 30)}}
    settings = {"TL4": {"dataset": "four"}, "TL4-unseen": {"dataset": "museum_unseen"}}
    table = report.cross_source_table({"TL4": (pooled, None), "TL4-unseen": (unseen, None)}, settings)
    assert table.values.tolist() == [
        ["TL4", "four", "field, museum", "0.800 [0.50, 0.90] (32/40)", "too few photos to say (6/8)"],
        ["TL4-unseen", "museum_unseen", "field", "", "0.500 [0.50, 0.90] (30/60) (unseen)"],
    ]
    assert list(table.columns[-2:]) == ["tested on field", "tested on museum"]
    # One source, all seen: nothing to compare, no table.
    assert (
        report.cross_source_table(
            {"TL4": ({"trained_on": ["field"], "by_source": {"field": scores(40, 32)}}, None)}, settings
        )
        is None
    )


def test_the_datasets_near_duplicate_counts_show_zero_and_each_benchmark(tmp_path):
    pairs = pd.DataFrame(
        {"held_out": ["test", "benchmark kept-out", "benchmark kept-out"], "train_sha256": ["a", "b", "b"]}
    )
    counts = report.near_duplicate_counts(pairs)
    assert counts.values.tolist() == [["val", 0, 0], ["test", 1, 1], ["benchmark kept-out", 2, 1]]


def test_the_label_issue_counts_are_in_the_provenance_section(tmp_path):
    summary = {
        "photos": 1407,
        "backbone": "pool",
        "folds": 5,
        "cross_validated_accuracy": 0.5729,
        "flagged": 111,
        "flagged_share": 0.0789,
        "flags_capped": True,
        "outliers": 50,
        "near_duplicates": {"photos": 51, "phash_only": 0, "datalab_only": 47},
        "clusters": {"count": 9, "unclustered": 844, "sizes": [442, 31]},
    }
    (tmp_path / "issues.json").write_text(json.dumps(summary))
    page = build_page(tmp_path / "full", label_issues=tmp_path / "issues.json")
    section = page[page.index("<h3>Label issues</h3>") : page.index("<h3>Attribution</h3>")]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", section)).split())
    assert "ranked the 1407 kept photos" in text and "backbone pool's features, accuracy 0.573" in text
    assert "111 flagged as likely label errors (7.9 %, capped), 50 outliers, 9 clusters" in text
    assert "(HDBSCAN; 844 photos in none)" in text and "51 photos with a near duplicate" in text
    (tmp_path / "issues.json").write_text(json.dumps({"photos": 0, "backbone": "none", "note": "no labelled photo"}))
    empty = build_page(tmp_path / "empty", label_issues=tmp_path / "issues.json")
    assert "ranked no photo: no labelled photo" in empty
    assert "<h3>Label issues</h3>" not in build_page(tmp_path / "none")


def test_per_class_figures_stop_growing_and_drop_their_numbers_for_a_whole_class():
    """bench/scale.py: at 150 classes the confusion matrix was 16,000 pixels square (100 s, 6 GB)."""
    for n in (4, 150):
        classes = [f"Genus species{i}" for i in range(n)]
        matrix = np.arange(n * n).reshape(n, n) % 7
        per_species = {c: {"n": 3, "correct": 2, "accuracy": 2 / 3} for c in classes}
        metrics = {"per_species": per_species, "accuracy": 0.5, "evaluated_on": "test"}
        labels = np.array(classes * 2)
        points = {"features": np.random.default_rng(0).normal(size=(2 * n, 8)), "labels": labels}
        drawn = {
            "confusion": figures.confusion_heatmap(matrix, classes, "M"),
            "per_species": figures.per_species_bars(metrics, "M"),
            "embeddings": figures.embedding_map(points, "M", "tsne") if n == 4 else None,
        }
        for name, fig in drawn.items():
            if fig is None:
                continue
            width, height = fig.get_size_inches()
            assert max(width, height) <= figures.MOST_INCHES, (n, name)
            numbers = [t for ax in fig.axes for t in ax.texts]
            assert (len(numbers) > 0) == (n <= figures.NUMBERED and name != "embeddings"), (n, name, len(numbers))
            figures.plt.close(fig)
    assert figures.confusion_heatmap(np.eye(4, dtype=int), classes[:4], "M").get_size_inches().tolist() == [4.8, 4.2]
