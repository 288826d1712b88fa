"""Report figures, drawn with matplotlib from the stage tables (PNG and SVG)."""

import io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fishid import steps

log = logging.getLogger(__name__)

# Fixed metadata and a fixed salt for the element ids (random otherwise) keep the SVG bytes
# identical from one run to the next.
_SVG_METADATA = {"Date": None, "Creator": "fishid"}
_SVG_RC = {"svg.hashsalt": "fishid"}


def save(fig, png_path) -> None:
    png_path = Path(png_path)
    # The tight box measured once for both files: bbox_inches="tight" draws the whole figure
    # once more per file just to measure it (a third of each evaluation job's figure time).
    box = fig.get_tightbbox().padded(plt.rcParams["savefig.pad_inches"])
    fig.savefig(png_path, dpi=120, bbox_inches=box, metadata={"Software": "fishid"})
    with plt.rc_context(_SVG_RC):
        fig.savefig(png_path.with_suffix(".svg"), bbox_inches=box, metadata=_SVG_METADATA)
    plt.close(fig)


def curves(history: pd.DataFrame, model: str):
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for split, style in (("train", "-"), ("val", "--")):
        loss_ax.plot(history["epoch"], history[f"{split}_loss"], style, label=split)
        acc_ax.plot(history["epoch"], history[f"{split}_acc"], style, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"{model}: loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title=f"{model}: accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


# A figure of one row or column per class stops growing at MOST_INCHES, and past NUMBERED
# classes its cells and bars carry no numbers (metrics.json and the report's tables have them):
# at 150 classes a confusion matrix of 0.9 inch a class was 16,000 pixels square and took 100 s
# and 6 GB to draw (bench/scale.py).
MOST_INCHES = 16
NUMBERED = 25


def _inches(fixed: float, per_class: float, classes: int) -> float:
    return min(fixed + per_class * classes, MOST_INCHES)


def _label_size(classes: int) -> float:
    return 10 if classes <= NUMBERED else max(2.0, 10 * NUMBERED / classes)


def confusion_heatmap(matrix, classes, model: str):
    matrix = np.asarray(matrix)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(_inches(1.2, 0.9, n), _inches(1, 0.8, n)))
    ax.imshow(matrix, cmap="Blues")
    short = [c.replace("Amphiprion ", "A. ") for c in classes]
    ax.set_xticks(range(n), short, rotation=40 if n <= NUMBERED else 90, ha="right", fontsize=_label_size(n))
    ax.set_yticks(range(n), short, fontsize=_label_size(n))
    ax.set(xlabel="predicted", ylabel="true", title=f"{model}: confusion matrix")
    if n <= NUMBERED:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, value, ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    return fig


def dataset_table(counts: pd.DataFrame, dataset: str):
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.32 * len(counts)))
    ax.axis("off")
    table = ax.table(cellText=counts.values, colLabels=list(counts.columns), loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.auto_set_column_width(list(range(counts.shape[1])))
    ax.set_title(f"Dataset {dataset}: images per label and split")
    return fig


def per_species_bars(metrics: dict, model: str):
    rows = [(label.replace("Amphiprion ", "A. "), row) for label, row in metrics["per_species"].items() if row["n"]]
    fig, ax = plt.subplots(figsize=(_inches(1.5, 0.9, len(rows)), 3.2))
    ax.bar([r[0] for r in rows], [r[1]["accuracy"] for r in rows], color="tab:orange")
    if len(rows) <= NUMBERED:
        for i, (_, row) in enumerate(rows):
            ax.text(i, row["accuracy"] + 0.02, f"{row['correct']}/{row['n']}", ha="center", fontsize=8)
    ax.axhline(metrics["accuracy"], color="grey", linestyle="--", label=f"overall {metrics['accuracy']:.2f}")
    ax.set(ylim=(0, 1.1), ylabel="accuracy", title=f"{model}: accuracy per species ({metrics['evaluated_on']})")
    ax.tick_params(axis="x", rotation=30 if len(rows) <= NUMBERED else 90, labelsize=_label_size(len(rows)))
    ax.legend(loc="lower right")
    return fig


def reliability_diagram(metrics: dict, model: str):
    bins = [b for b in metrics["calibration"]["bins"] if b["n"]]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=[b["high"] - b["low"] for b in bins],
        edgecolor="black",
        alpha=0.7,
        label="accuracy in bin",
    )
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black", ms=3)
    ece = metrics["calibration"]["ece"]
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top score)", ylabel="accuracy")
    ax.set_title(f"{model}: reliability, ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def threshold_curves(metrics: dict, model: str):
    """Accuracy against the confidence below which an image is called 'other'; for embedding
    models, same/different accuracy against the distance threshold."""
    if "embedding" in metrics:
        return distance_curves(metrics, model)
    rows = pd.DataFrame(metrics["thresholds"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(rows["threshold"], rows["known_accuracy"], label="known species")
    if rows["other_accuracy"].notna().any():
        ax.plot(rows["threshold"], rows["other_accuracy"], label="'other'")
    ax.plot(rows["threshold"], rows["accuracy"], "--", color="grey", label="all")
    ax.set(xlabel="threshold on the top known-species score", ylabel="accuracy", ylim=(0, 1.02))
    ax.set_title(f"{model}: open-set threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def distance_curves(metrics: dict, model: str):
    rows = pd.DataFrame(metrics["embedding"]["pairs"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(rows["threshold"], rows["accuracy"], label="all pairs")
    ax.plot(rows["threshold"], rows["same_accuracy"], label="same species")
    ax.plot(rows["threshold"], rows["different_accuracy"], label="different species")
    ax.set(xlabel="distance threshold (same below)", ylabel="accuracy", ylim=(0, 1.02))
    ax.set_title(f"{model}: pairs by distance; KNN accuracy {metrics['embedding']['knn_accuracy']:.2f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _image_grid(images, titles, suptitle, overlays=None, columns=4):
    n = max(len(images), 1)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = axes.flat[i]
        ax.imshow(np.transpose(image, (1, 2, 0)))
        if overlays is not None:
            ax.imshow(overlays[i], cmap="inferno", alpha=0.55)
        ax.set_title(str(title).replace("Amphiprion ", "A. "), fontsize=7)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(suptitle)
    return fig


def saliency_grid(data, model: str):
    return _image_grid(
        data["saliency_images"], data["saliency_titles"], f"{model}: saliency (true -> predicted)", data["saliency"]
    )


def misclassified_grid(data, model: str):
    return _image_grid(data["wrong_images"], data["wrong_titles"], f"{model}: misclassified images")


# report.embedding_map in the config -> the name a figure gives the method.
EMBEDDING_METHODS = {"tsne": "t-SNE", "umap": "UMAP"}
EXACT_TSNE_POINTS = 1000


def embedding_points(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """The embeddings' 2-D points by `method`, one of EMBEDDING_METHODS."""
    if method == "umap":
        try:
            import umap
        except ImportError as error:
            raise ImportError(
                "report.embedding_map is umap, which needs the umap-learn package "
                "(pip install -r requirements.txt, which pins it); or set report.embedding_map: tsne"
            ) from error
        # UMAP needs fewer neighbours than points; a small evaluation split has few. A seed
        # makes it run on one thread whatever n_jobs says (it warns unless told so).
        neighbours = max(2, min(15, len(features) - 1))
        return umap.UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1).fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = max(2.0, min(30.0, (len(features) - 1) / 3))
        # Barnes-Hut's tree costs more than it saves on an evaluation split of a few hundred
        # points (120 points: 6.2 s against 1.6 s exact); exact grows as n squared.
        method = "exact" if len(features) <= EXACT_TSNE_POINTS else "barnes_hut"
        return TSNE(perplexity=perplexity, random_state=seed, init="pca", method=method).fit_transform(features)
    raise ValueError(f"unknown embedding map method {method!r} (known: {', '.join(EMBEDDING_METHODS)})")


def embedding_map(data, model: str, method: str, seed: int = 0):
    """2-D map of the model's embeddings by t-SNE or UMAP, coloured by label."""
    features, labels = data["features"], data["labels"]
    points = embedding_points(features, method, seed)
    fig, ax = plt.subplots(figsize=(5, 4))
    for label in sorted(set(labels)):
        chosen = labels == label
        ax.scatter(points[chosen, 0], points[chosen, 1], s=14, label=label.replace("Amphiprion ", "A. "))
    ax.set(xticks=[], yticks=[], title=f"{model}: embeddings ({EMBEDDING_METHODS[method]})")
    if len(set(labels)) <= NUMBERED:
        ax.legend(fontsize=7, loc="best")
    return fig


def summary_chart(rows: list[dict]):
    """Every model's accuracy with its 95 % bootstrap interval, against its majority baseline.
    `rows`: dicts of model, accuracy, ci95 ([low, high]), majority_baseline, in the report's order."""
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(rows)), layout="constrained")
    positions = np.arange(len(rows))[::-1]  # the first model at the top, as in the table below
    accuracy = np.array([row["accuracy"] for row in rows])
    low, high = (np.array([row["ci95"][i] for row in rows]) for i in (0, 1))
    ax.errorbar(
        accuracy,
        positions,
        xerr=[accuracy - low, high - accuracy],
        fmt="o",
        color="tab:blue",
        capsize=3,
        label="accuracy [95% CI]",
    )
    ax.scatter(
        [row["majority_baseline"] for row in rows],
        positions,
        marker="|",
        s=200,
        color="tab:red",
        label="majority baseline",
        zorder=3,
    )
    ax.set_yticks(positions, [row["model"] for row in rows])
    ax.set(xlim=(0, 1.02), xlabel="accuracy on the evaluation split", ylim=(-0.7, len(rows) - 0.3))
    ax.set_title("Every model: accuracy [95 % bootstrap interval] and majority baseline")
    ax.grid(axis="x", alpha=0.3)
    # Below the axes: inside, it would hide the models near the side it sits on.
    fig.legend(loc="outside lower center", ncol=2, fontsize=8)
    return fig


def svg_text(fig) -> str:
    """The figure as an SVG element to write into a page: text kept as text (findable, small)."""
    out = io.StringIO()
    with plt.rc_context({**_SVG_RC, "svg.fonttype": "none"}):
        fig.savefig(out, format="svg", bbox_inches="tight", metadata=_SVG_METADATA)
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]


def model_figure(stem: str, history: pd.DataFrame, metrics: dict, data, model: str, embedding_method: str):
    """One of fishid.report.figure_list.MODEL_FIGURES, from the model's history, metrics.json and figure data."""
    draw = {
        "curves": lambda: curves(history, model),
        "per_species": lambda: per_species_bars(metrics, model),
        "confusion": lambda: confusion_heatmap(metrics["confusion"], metrics["classes"], model),
        "reliability": lambda: reliability_diagram(metrics, model),
        "thresholds": lambda: threshold_curves(metrics, model),
        "saliency": lambda: saliency_grid(data, model),
        "misclassified": lambda: misclassified_grid(data, model),
        "embeddings": lambda: embedding_map(data, model, embedding_method),
    }
    return draw[stem]()


def save_model_figures(model: str, history: pd.DataFrame, metrics: dict, data, out_dir, embedding_method: str):
    """Every figure of MODEL_FIGURES for one model, as out_dir/<stem>.png and .svg."""
    from fishid.report.figure_list import STEMS

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        save(model_figure(stem, history, metrics, data, model, embedding_method), Path(out_dir, f"{stem}.png"))


@steps.declare(
    "plot-dataset",
    "a dataset's table of images per label and split",
    steps.Option("name", "wildcards", key="dataset"),
    steps.inp("counts"),
    steps.out("out", key="png"),
)
def plot_dataset_step(name, counts, out):
    """The `plot-dataset` step (rule plot_dataset)."""
    save(dataset_table(pd.read_csv(counts, sep="\t"), name), out)
