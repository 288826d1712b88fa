"""One list of each model's figures (fishid.report.figure_list), followed by every place that names them."""

import re

from conftest import REPO

from fishid.report.figure_list import MODEL_FIGURES, STEMS

CAPTIONS = REPO / "workflow" / "report"
NOT_MODEL_FIGURES = {"workflow", "dataset"}


def test_every_figure_has_its_snakemake_report_caption_and_no_other_does():
    model_captions = {p.stem for p in CAPTIONS.glob("*.rst")} - NOT_MODEL_FIGURES
    assert model_captions == set(STEMS)
    for stem in STEMS:
        assert "{{ snakemake.wildcards.model }}" in (CAPTIONS / f"{stem}.rst").read_text(), stem


def test_the_plotting_step_draws_exactly_the_listed_figures():
    source = (REPO / "workflow/fishid/report/figures.py").read_text()
    drawn = re.findall(r'^\s+"(\w+)": lambda: ', source.split("def model_figure", 1)[1], re.MULTILINE)
    assert tuple(drawn) == STEMS
    assert len({f.stem for f in MODEL_FIGURES}) == len(MODEL_FIGURES)
