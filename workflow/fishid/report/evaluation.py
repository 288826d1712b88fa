"""The `evaluate` step (rule evaluate_model): evaluate a model, then draw its figures.

Here, above both the evaluation and the figures (fishid.evaluate knows no report), and in
one job: starting Python with PyTorch and matplotlib costs more than drawing them (18 jobs
fewer in the demo)."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fishid import steps
from fishid.evaluate import stage as evaluate
from fishid.report import figures as drawing

log = logging.getLogger(__name__)


@steps.declare(
    "evaluate",
    "evaluate one model and draw its figures",
    steps.Option("name", "wildcards", key="model"),
    steps.SPEC,
    steps.inp("weights"),
    steps.inp("cache"),
    steps.inp("split", help="the dataset's split table (each photo's sources)"),
    steps.par("other_label", default="", help="the dataset's pooled 'other' label, if any"),
    steps.out("predictions"),
    steps.out("metrics"),
    steps.out("figure_data"),
    steps.inp("history", help="the training curves (for the figures)"),
    steps.par("figures", help="folder of the model's figures"),
    steps.par("embedding_map", choices=("tsne", "umap"), help="report.embedding_map"),
    steps.THREADS,
)
def evaluate_step(
    name,
    spec,
    weights,
    cache,
    split,
    predictions,
    metrics,
    figure_data,
    history,
    figures,
    embedding_map,
    other_label="",
    threads=1,
):
    torch.set_num_threads(threads)
    result = evaluate.run(spec, name, weights, cache, split, other_label, predictions, metrics, figure_data)
    log.info("%s accuracy on %s: %.3f", name, result["evaluated_on"], result["accuracy"])
    drawing.save_model_figures(
        name,
        pd.read_csv(history),
        json.loads(Path(metrics).read_text()),
        np.load(figure_data),
        figures,
        embedding_map,
    )
