"""Each model's figures, in the order the report shows them: the one list that the plotting
step (fishid.report.figures.model_figure), the rules' outputs, the HTML report and the captions of
`snakemake --report` (workflow/report/<stem>.rst, kept in step by tests/unit/test_figure_list.py)
follow. Light on purpose: the Snakefile reads it at every start."""

from typing import NamedTuple


class Figure(NamedTuple):
    stem: str
    caption: str
    wide: bool


MODEL_FIGURES = (
    Figure("curves", "Loss and accuracy per epoch, training and validation.", True),
    Figure("per_species", "Accuracy per species (correct/total above the bars).", False),
    Figure("confusion", "Confusion matrix: rows true, columns predicted.", False),
    Figure("reliability", "Reliability diagram: accuracy against confidence; ECE in the title.", False),
    Figure(
        "thresholds",
        "Accuracy when images whose top known-species score is below a threshold are called 'other'.",
        False,
    ),
    Figure("saliency", "Saliency maps for a fixed sample of evaluation images (true -> predicted).", True),
    Figure("misclassified", "Evaluation images the model got wrong.", True),
    Figure(
        "embeddings",
        "2-D map of the embeddings (siamese/triplet: the learned embedding; otherwise the input of the last "
        "linear layer), coloured by label.",
        False,
    ),
)
STEMS = tuple(figure.stem for figure in MODEL_FIGURES)
