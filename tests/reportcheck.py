"""What a finished run's report must hold, checked the same way for the tiny test run and for
the demo: every section, and for every model of its config its row, numbers and figures."""

import base64
import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fishid.report.figure_list import MODEL_FIGURES

FIGURES_PER_MODEL = len(MODEL_FIGURES)
PROVENANCE_SECTIONS = (
    "Images per source and licence",
    "Images per species and source",
    "Cleaning",
    "Label issues",
    "Attribution",
    "Citing the data",
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags that keep Chromium off the network it does not have here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# How an inlined figure's bytes start: charts are PNG, photo grids WebP.
INLINED_MAGIC = {
    "image/png": lambda data: data.startswith(b"\x89PNG"),
    "image/webp": lambda data: data[:4] == b"RIFF" and data[8:12] == b"WEBP",
}
# The page without figures, and each figure at display size: the demo's 128 figures came to
# 2.5 MB (17.6 MB when they were inlined at full size).
PAGE_BYTES, BYTES_PER_FIGURE = 200_000, 30_000


class Figures(HTMLParser):
    """Every <img> source and every <figcaption> text of a page, in order."""

    def __init__(self):
        super().__init__()
        self.sources, self.captions, self._in_caption = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        self._in_caption = tag == "figcaption"

    def handle_data(self, data):
        if self._in_caption:
            self.captions.append(data)
            self._in_caption = False


def table_row(page: str, name: str) -> str:
    """The model comparison table's row of a model."""
    return re.search(rf"<td>{re.escape(name)}(?: ⚠)?</td>(.*?)</tr>", page, re.DOTALL).group(1)


def model_section(page: str, name: str) -> str:
    start = page.index(f'<h3 id="model-{name}">')
    end = page.find("<h3 ", start + 1)
    return page[start : end if end != -1 else len(page)]


def check_report(project: Path, config: dict) -> str:
    """Assert that results/report/index.html shows everything the run produced; returns the page."""
    page = (project / "results/report/index.html").read_text()
    figures = Figures()
    figures.feed(page)
    # Every figure inlined: the page is one file a user can mail, and a light one.
    # ... and the detect stage's sheet of crops, where the run has one.
    assert len(figures.sources) == FIGURES_PER_MODEL * len(config["models"]) + ("detect" in config)
    for src in figures.sources:
        mime, data = re.fullmatch(r"data:(image/\w+);base64,(.+)", src).groups()
        assert INLINED_MAGIC[mime](base64.b64decode(data)), mime
    size = (project / "results/report/index.html").stat().st_size
    assert size < PAGE_BYTES + BYTES_PER_FIGURE * len(figures.sources), size
    # The summary chart opens the page and names every model (its text is SVG text).
    summary = page[page.index('<h2 id="summary">') : page.index('<h2 id="provenance">')]
    for name in config["models"]:
        assert re.search(rf">\s*{re.escape(html.escape(name))}\s*</text>", summary), name
    for section in PROVENANCE_SECTIONS:
        assert f"<h3>{section}</h3>" in page, section
    issues = json.loads((project / "results/review/label_issues.json").read_text())
    for count in ("flagged", "outliers"):
        assert f'<span class="count">{issues[count]}</span> {count}' in page, count
    for dataset in config["datasets"]:
        assert f"<h3>{dataset}</h3>" in page, dataset
    for name, spec in config["models"].items():
        metrics = json.loads((project / "results/models" / name / "metrics.json").read_text())
        low, high = metrics["accuracy_ci95"]
        accuracy, n = metrics["accuracy"], metrics["n"]
        assert accuracy == metrics["correct"] / n, name
        # A bootstrap interval of a proportion is close to the normal approximation's (within
        # one or two images' worth): a 68 % or 50 % interval, or a wrong resample, is not.
        half = 1.96 * (accuracy * (1 - accuracy) / n) ** 0.5
        slack = 1.5 / n
        assert abs(low - max(0.0, accuracy - half)) <= slack and abs(high - min(1.0, accuracy + half)) <= slack, (
            name,
            accuracy,
            n,
            low,
            high,
        )
        row = table_row(page, name)
        assert f"<td>{metrics['accuracy']:.3f} [{low:.2f}, {high:.2f}]</td>" in row, (name, row)
        assert f"<td>{metrics['correct']}/{metrics['n']}</td>" in row
        assert f"<td>{metrics['calibration']['ece']:.3f}</td>" in row
        assert f"<td>{metrics['majority_baseline']:.3f}</td>" in row
        # A model that learned nothing carries the mark and its reasons, and only such a model.
        assert (f"<td>{name} ⚠</td>" in page) == bool(metrics["learned_nothing"]), (name, metrics["learned_nothing"])
        for reason in metrics["learned_nothing"]:
            assert reason in html.unescape(row), (name, reason)
        section = model_section(page, name)
        for label, scores in metrics["per_species"].items():
            assert f"<td>{label}</td>" in section and f"<td>{scores['f1']:.3f}</td>" in section, (name, label)
        captions = [c for c in figures.captions if c.startswith(f"{name}: ")]
        assert len(captions) == FIGURES_PER_MODEL, (name, captions)
        if "open_set" in metrics:
            auroc = metrics["open_set"]["auroc_known_vs_other"]
            assert f"AUROC of known vs other by top known-species score {auroc:.3f}" in section, name
        if "embedding" in metrics:
            assert f"nearest-neighbour accuracy {metrics['embedding']['knn_accuracy']:.3f}" in section
        if spec.get("control_of"):
            # The control's accuracy stands in the row of the model it controls.
            assert f"<td>{name}: {metrics['accuracy']:.3f}</td>" in table_row(page, spec["control_of"]), name
    return page


def render_in_chromium(report: Path, screenshot: Path) -> list:
    """Load the report in headless Chromium; assert no page error or failed request and
    return [complete, width, height] per image."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run must install Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it and runs this test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, failed = [], []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(report.as_uri(), wait_until="load")
        sizes = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight])")
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    assert errors == [] and failed == []
    assert all(complete and width > 100 and height > 100 for complete, width, height in sizes), sizes
    assert screenshot.stat().st_size > 10_000
    return sizes
