"""Report figures, drawn with matplotlib from the stage tables (PNG and SVG)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Fixed metadata keep the SVG bytes identical from one run to the next.
_SVG_METADATA = {"Date": None, "Creator": "fishid"}


def save(fig, png_path) -> None:
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=120, bbox_inches="tight", metadata={"Software": "fishid"})
    fig.savefig(png_path.with_suffix(".svg"), bbox_inches="tight", metadata=_SVG_METADATA)
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


def confusion_heatmap(matrix, classes, model: str):
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 1 + 0.8 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    short = [c.replace("Amphiprion ", "A. ") for c in classes]
    ax.set_xticks(range(len(classes)), short, rotation=40, ha="right")
    ax.set_yticks(range(len(classes)), short)
    ax.set(xlabel="predicted", ylabel="true", title=f"{model}: confusion matrix")
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
