"""Evaluation: predictions on held-out images and every metric the report shows."""

import json

import numpy as np
import pandas as pd
import torch

from fishid.evaluate import inference
from fishid.evaluate import metrics as metric
from fishid.evaluate import ranks as taxonomy
from fishid.models import registry as models
from fishid.runtime import predict_logits
from fishid.tables import read_table, write_table
from fishid.train import imagecache


def predict(settings: dict, weights_path, cache: dict, role: str) -> pd.DataFrame:
    """sha256, split, label, predicted, score:<class> (see fishid.evaluate.inference.predict)."""
    return inference.predict(settings, weights_path, cache, role)


def metrics(
    predictions: pd.DataFrame,
    classes,
    train_labels,
    other_label: str = "",
    seed: int = 0,
    ranks: pd.DataFrame | None = None,
    validation: pd.DataFrame | None = None,
) -> dict:
    """Every number the report shows for one model, from its predictions on one split.

    `ranks`: each class's ranks above the species (evaluate.ranks.class_ranks; none known where
    None); `validation`: the predictions the by-rank fallback thresholds are chosen on (the
    evaluated ones themselves where None)."""
    labels, predicted = predictions["label"].to_numpy(), predictions["predicted"].to_numpy()
    # A threshold model may say "other" although it has no such class.
    classes = list(classes) + sorted((set(labels) | set(predicted)) - set(classes))
    matrix = metric.confusion(labels, predicted, classes)
    scores = metric.precision_recall_f1(matrix)
    correct = labels == predicted
    per_species = {}
    for i, c in enumerate(classes):
        n = int(scores["support"][i])
        per_species[c] = {
            "n": n,
            "correct": int(matrix[i, i]),
            "accuracy": matrix[i, i] / n if n else None,
            **{k: float(scores[k][i]) for k in ("precision", "recall", "f1")},
        }
    pairs = np.stack([labels, predicted], axis=1)
    # Predicting the most common training label for everything: what any model must beat.
    majority = pd.Series(train_labels).value_counts().idxmax()
    confidence = predictions["confidence"].to_numpy()
    bins = metric.calibration_bins(confidence, correct)
    accuracy_ci = metric.bootstrap_interval(correct, seed=seed)
    baseline = float((labels == majority).mean())
    result = {
        "n": len(predictions),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": accuracy_ci,
        "balanced_accuracy": metric.balanced_accuracy(matrix),
        "balanced_accuracy_ci95": metric.bootstrap_interval(
            pairs, lambda p: metric.balanced_accuracy(metric.confusion(p[:, 0], p[:, 1], classes)), seed=seed
        ),
        **{f"macro_{k}": float(scores[k][scores["support"] > 0].mean()) for k in ("precision", "recall", "f1")},
        "majority_label": majority,
        "majority_baseline": baseline,
        "learned_nothing": learned_nothing(predicted, accuracy_ci, baseline),
        "per_species": per_species,
        "classes": classes,
        "confusion": matrix.tolist(),
        "calibration": {"ece": metric.expected_calibration_error(bins), "bins": bins},
        "thresholds": metric.open_set_curve(
            predictions["known_confidence"], predicted, labels, other_label or "\0", THRESHOLDS
        ),
        "by_rank": taxonomy.by_rank(predictions, ranks, THRESHOLDS, validation),
    }
    if other_label and (labels == other_label).any():
        known = labels != other_label
        result["open_set"] = {
            "other_label": other_label,
            "known_accuracy": float(correct[known].mean()),
            "other_accuracy": float(correct[~known].mean()),
            "auroc_known_vs_other": metric.auroc(predictions["known_confidence"], known),
        }
    return result


THRESHOLDS = np.round(np.linspace(0, 1, 21), 2)


# Below this many evaluated photos, a source's accuracy is shown as too few to say.
MIN_SOURCE_PHOTOS = 20


def by_source(predictions: pd.DataFrame, sources: pd.Series, classes, seed: int = 0) -> dict:
    """Accuracy with its interval, and the confusion, per source of the evaluated photos
    (`sources`: "|"-joined source names by sha256; a photo several sources listed counts
    for each of them)."""
    listed = predictions.assign(source=predictions["sha256"].map(sources).fillna("").str.split("|")).explode("source")
    result = {}
    for source, rows in listed.groupby("source", sort=True):
        correct = (rows["label"] == rows["predicted"]).to_numpy()
        result[source] = {
            "n": len(rows),
            "correct": int(correct.sum()),
            "accuracy": float(correct.mean()),
            "accuracy_ci95": metric.bootstrap_interval(correct, seed=seed),
            "too_few": len(rows) < MIN_SOURCE_PHOTOS,
            "confusion": metric.confusion(rows["label"], rows["predicted"], classes).tolist(),
        }
    return result


def training_sources(split: pd.DataFrame) -> list[str]:
    """The sources of a split's training photos: what a model on it learned from."""
    train = split.loc[split["split"] == "train", "sources"]
    return sorted({source for listed in train for source in listed.split("|") if source})


def learned_nothing(predicted, accuracy_ci, baseline: float) -> list[str]:
    """Why a model's numbers may show no learning at all ([] when none applies): a model that
    puts every image in one class, or is not clearly better than the majority baseline,
    must never be reported as if it had learned."""
    reasons = []
    if len(set(predicted)) == 1:
        reasons.append(f"predicts {predicted[0]!r} for every image")
    if accuracy_ci[0] <= baseline:
        reasons.append(
            f"accuracy's 95 % interval [{accuracy_ci[0]:.3f}, {accuracy_ci[1]:.3f}] does not clear the majority "
            f"baseline {baseline:.3f}"
        )
    return reasons


def add_confidences(predictions: pd.DataFrame, other_label: str) -> pd.DataFrame:
    """The top score (calibration) and the top score among known species (open-set curves)."""
    score_columns = [c for c in predictions if c.startswith("score:")]
    known_columns = [c for c in score_columns if c != f"score:{other_label}"]
    return predictions.assign(
        confidence=predictions[score_columns].max(axis=1),
        known_confidence=predictions[known_columns].max(axis=1),
    )


def penultimate_features(model, inputs) -> torch.Tensor:
    """What the last linear layer sees: the model's embedding of each image."""
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    handle = last_linear.register_forward_hook(lambda module, args, output: captured.append(args[0].detach()))
    try:
        predict_logits(model, inputs, torch.device("cpu"))
    finally:
        handle.remove()
    return torch.cat(captured).flatten(1)


def saliency(model, inputs) -> torch.Tensor:
    """|d top-class score / d pixel|, maximum over channels (Simonyan et al. 2014)."""
    model.eval()
    inputs = inputs.clone().requires_grad_(True)
    logits = model(inputs)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return inputs.grad.abs().amax(dim=1)


def figure_data(model, weights, cache, role, predictions, embedded=None, n_saliency=8, n_misclassified=16) -> dict:
    """Arrays the figures need that only the model can give: embeddings (`embedded` for
    metric-learning models, else what the last linear layer sees), saliency maps and the
    pictures of a fixed sample and of the mistakes."""
    images, _ = imagecache.subset(cache, role)
    inputs = inference.model_inputs(images, weights)
    # A fixed sample (by hash), so the same images are shown from run to run.
    sample = np.argsort(predictions["sha256"].to_numpy())[:n_saliency]
    wrong = np.flatnonzero((predictions["label"] != predictions["predicted"]).to_numpy())[:n_misclassified]
    titles = predictions["label"] + " -> " + predictions["predicted"]
    # Plain unicode arrays: np.load refuses object arrays (they would need pickle).
    return {
        "features": embedded if embedded is not None else penultimate_features(model, inputs).numpy(),
        "labels": predictions["label"].to_numpy(dtype=str),
        "saliency_images": images[sample].numpy(),
        "saliency": saliency(model, inputs[sample]).numpy(),
        "saliency_titles": titles.iloc[sample].to_numpy(dtype=str),
        "wrong_images": images[wrong].numpy(),
        "wrong_titles": titles.iloc[wrong].to_numpy(dtype=str),
    }


DISTANCES = np.round(np.arange(0.3, 2.91, 0.1), 1)


def embedding_metrics(model, weights, cache, role, embedded) -> dict:
    """Same/different decisions by distance over all pairs of the `role` images' embeddings,
    at the distance thresholds of the metric-learning study, and a k-nearest-neighbour
    classifier whose neighbours are the training images, as many as the model's own head
    counts (`knn_k`)."""
    k = model.knn.k
    labels, train_labels = imagecache.role_labels(cache, role), imagecache.role_labels(cache, "train")
    knn = metric.knn_predict(inference.embed_loaded(model, weights, cache, "train"), train_labels, embedded, k=k)
    return {
        "pairs": metric.pair_distance_accuracy(embedded, labels, DISTANCES),
        "knn_k": k,
        "knn_accuracy": float((knn == labels).mean()),
    }


def run(
    settings: dict,
    model_name: str,
    weights_path,
    cache_path,
    split_path,
    other_label,
    predictions_path,
    metrics_path,
    figure_data_path,
) -> dict:
    cache = imagecache.load(cache_path)
    # One model, loaded once, for every number and figure (and the same path as `fishid predict`).
    model, weights = inference.load_model(settings, weights_path)
    roles = [r for r in ("val", "test") if r in cache["split"]]
    predictions = pd.concat([inference.predict_loaded(model, weights, cache, role) for role in roles])
    predictions.insert(0, "model", model_name)
    write_table(predictions, predictions_path)
    # Reported numbers come from test where the dataset has one, from validation otherwise.
    reported = "test" if "test" in roles else "val"
    train_labels = imagecache.role_labels(cache, "train").tolist()
    evaluated = add_confidences(predictions[predictions["split"] == reported], other_label)
    split = read_table(split_path, ["sha256", "split", "sources"])
    # The fallback's thresholds are chosen on validation, and only reported on test.
    validation = predictions[predictions["split"] == "val"] if reported == "test" else None
    result = {
        "model": model_name,
        "evaluated_on": reported,
        **metrics(
            evaluated,
            cache["classes"],
            train_labels,
            other_label,
            seed=settings["seed"],
            ranks=taxonomy.class_ranks(split),
            validation=validation,
        ),
    }
    result["trained_on"] = training_sources(split)
    result["by_source"] = by_source(
        evaluated, split.set_index("sha256")["sources"], result["classes"], seed=settings["seed"]
    )
    embedded = None
    if models.variant(settings["arch"]).knn:
        embedded = inference.embed_loaded(model, weights, cache, reported)
        result["embedding"] = embedding_metrics(model, weights, cache, reported, embedded)
    with open(metrics_path, "w") as handle:
        json.dump(result, handle, indent=2)
    figures = figure_data(model, weights, cache, reported, evaluated, embedded)
    np.savez_compressed(figure_data_path, **figures)
    return result
