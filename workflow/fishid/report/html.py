"""The report: one self-contained HTML file (figures inlined) with provenance, datasets,
the model comparison and every figure with its caption."""

import base64
import html
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import fishid
from fishid.report.figure_list import MODEL_FIGURES
from fishid.tables import LEAK, read_table

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #eef; }} img {{ max-width: 100%; }} .note {{ background: #ffd; padding: 0.5em 1em; }}
.warning {{ background: #fdd; padding: 0.5em 1em; }}
figure {{ display: inline-block; vertical-align: top; margin: 0.5em; max-width: 48%; }}
figure.wide {{ max-width: 98%; }} figcaption {{ font-size: 0.85em; color: #444; }}
</style></head><body>
<h1>{title}</h1>
<p>Generated {generated} by fishid {version}. Every number below can be regenerated with
<code>snakemake --profile profiles/local</code> from the configuration it names.</p>
<nav>{nav}</nav>
{body}
</body></html>
"""


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def inline_png(path, caption: str, wide=False) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = html.escape(caption)
    css = ' class="wide"' if wide else ""
    return (
        f'<figure{css}><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def interval(value: float, ci) -> str:
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def provenance_section(records: pd.DataFrame, downloads: pd.DataFrame, clean: pd.DataFrame) -> str:
    """Images per source, licence and species; why images were dropped; who to credit."""
    stored = records.merge(downloads[["record_id", "sha256"]], on="record_id")
    kept_hashes = set(clean.loc[clean["kept"].astype(str) == "True", "sha256"])
    stored["kept"] = stored["sha256"].isin(kept_hashes)
    by_source = (
        stored.groupby(["source", "license"]).agg(records=("record_id", "size"), kept=("kept", "sum")).reset_index()
    )
    by_species = pd.crosstab(stored["taxon"], stored["source"]).reset_index().rename(columns={"taxon": "species"})
    dropped = clean.loc[clean["kept"].astype(str) != "True", "reason"].str.split(":").str[0].value_counts()
    dropped = dropped.rename_axis("reason").rename("images").reset_index()
    credits = (
        stored[stored["kept"]]
        .groupby(["source", "license", "rights_holder", "creator"])
        .agg(images=("sha256", "nunique"), example=("page_url", "first"))
        .reset_index()
    )
    return "\n".join(
        [
            '<h2 id="provenance">Provenance</h2>',
            "<h3>Images per source and licence</h3>",
            table_html(by_source),
            "<h3>Images per species and source</h3>",
            table_html(by_species),
            "<h3>Cleaning</h3>",
            f"<p>{len(kept_hashes)} images kept out of {len(clean)} stored.</p>",
            table_html(dropped) if len(dropped) else "<p>No image was dropped.</p>",
            "<h3>Attribution</h3>",
            "<p>Licences such as CC BY require crediting the rights holder. Per image: "
            "<code>results/provenance/attribution.csv</code> and <code>fishid audit</code>.</p>",
            f"<details><summary>{len(credits)} rights holder(s) and licence(s)</summary>",
            table_html(credits),
            "</details>",
        ]
    )


def datasets_section(counts_paths, decision_paths=()) -> str:
    leaks = {Path(p).name.removesuffix(".decisions.tsv"): leak_table(read_table(p)) for p in decision_paths}
    parts = ['<h2 id="datasets">Datasets</h2>']
    for path in counts_paths:
        dataset = Path(path).name.removesuffix(".counts.tsv")
        parts.append(f"<h3>{html.escape(dataset)}</h3>" + table_html(pd.read_csv(path, sep="\t")))
        leaked = leaks.get(dataset)
        if leaked is not None and len(leaked):
            parts.append(
                f'<p class="warning">The split this dataset was given cuts {leaked["group"].nunique()} group(s): '
                f"{len(leaked)} image(s) are linked to an image in another role, so its numbers may be "
                "optimistic. They were kept where the source put them.</p>" + table_html(leaked)
            )
    return "\n".join(parts)


def leak_table(decisions: pd.DataFrame) -> pd.DataFrame:
    leaked = decisions[decisions["decision"] == LEAK]
    return leaked[["group", "label", "sha256", "reason"]].sort_values(["group", "sha256"])


def model_row(name: str, settings: dict, metrics: dict, history: pd.DataFrame, controls: dict) -> dict:
    flags = metrics.get("learned_nothing", [])
    row = {
        "model": f"{name} ⚠" if flags else name,
        "architecture": settings["arch"],
        "dataset": settings["dataset"],
        "backbone": settings.get("backbone", ""),
        "evaluated on": metrics["evaluated_on"],
        "accuracy [95% CI]": interval(metrics["accuracy"], metrics["accuracy_ci95"]),
        "correct": f"{metrics['correct']}/{metrics['n']}",
        "balanced accuracy [95% CI]": interval(metrics["balanced_accuracy"], metrics["balanced_accuracy_ci95"]),
        "macro F1": f"{metrics['macro_f1']:.3f}",
        "ECE": f"{metrics['calibration']['ece']:.3f}",
        "majority baseline": f"{metrics['majority_baseline']:.3f}",
        "random-backbone control": "",
        "best val epoch (optimistic)": "",
        "⚠ learned nothing?": "; ".join(flags),
    }
    control = controls.get(name)
    if control:
        row["random-backbone control"] = f"{control[0]}: {control[1]['accuracy']:.3f}"
    if metrics["evaluated_on"] == "val":
        # The study picked its best epoch on the very validation set it reported: shown
        # apart, and marked, because it flatters the model.
        best = history.loc[history["val_acc"].idxmax()]
        row["best val epoch (optimistic)"] = f"{best['val_acc']:.3f} (epoch {int(best['epoch'])})"
    return row


def per_species_table(metrics: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "label": label,
                "images": row["n"],
                "correct": row["correct"],
                "accuracy": f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "",
                "precision": f"{row['precision']:.3f}",
                "recall": f"{row['recall']:.3f}",
                "F1": f"{row['f1']:.3f}",
            }
            for label, row in metrics["per_species"].items()
        ]
    )


def embedding_paragraph(metrics: dict) -> str:
    embedding = metrics.get("embedding")
    if not embedding:
        return ""
    best = max(embedding["pairs"], key=lambda row: row["accuracy"])
    return (
        f"<p>Embeddings: {embedding['knn_k']}-nearest-neighbour accuracy {embedding['knn_accuracy']:.3f}; "
        f"same/different by distance is best at threshold {best['threshold']:.1f}: accuracy {best['accuracy']:.3f} "
        f"(same species {best['same_accuracy']:.3f}, different {best['different_accuracy']:.3f}).</p>"
    )


def open_set_paragraph(metrics: dict) -> str:
    open_set = metrics.get("open_set")
    if not open_set:
        return ""
    return (
        f"<p>Open set ('{html.escape(open_set['other_label'])}'): accuracy on known species "
        f"{open_set['known_accuracy']:.3f}, on '{html.escape(open_set['other_label'])}' "
        f"{open_set['other_accuracy']:.3f}; AUROC of known vs other by top known-species score "
        f"{open_set['auroc_known_vs_other']:.3f}.</p>"
    )


def build(
    config: dict,
    record_paths,
    download_paths,
    clean_path,
    counts_paths,
    model_dirs,
    figure_dir,
    out_path,
    decision_paths=(),
):
    """`model_dirs` hold each model's metrics.json and history.csv; every file names what it
    belongs to, so the order of the paths does not matter."""
    records = pd.concat([read_table(p) for p in record_paths])
    downloads = pd.concat([read_table(p) for p in download_paths])
    body = [
        provenance_section(records, downloads, read_table(clean_path)),
        datasets_section(counts_paths, decision_paths),
    ]

    results = {}
    for folder in map(Path, model_dirs):
        metrics = json.loads((folder / "metrics.json").read_text())
        results[metrics["model"]] = (metrics, pd.read_csv(folder / "history.csv"))
    controls = {
        spec["control_of"]: (name, results[name][0])
        for name, spec in config["models"].items()
        if spec.get("control_of") and name in results
    }
    rows = [model_row(n, config["models"][n], m, h, controls) for n, (m, h) in results.items()]
    body.append('<h2 id="models">Models</h2>')
    backbones = config.get("backbones", {})
    used = {config["models"][n].get("backbone") for n in results}
    body.extend(
        f'<p class="note">Backbone <b>{html.escape(b)}</b>: {html.escape(spec["description"])}</p>'
        for b, spec in backbones.items()
        if b in used
    )
    body.append(
        "<p>Intervals are 95 % percentile bootstrap intervals over the evaluation images. "
        "Numbers come from the test split where a dataset has one (the epoch chosen on validation), "
        "otherwise from validation at the last epoch; the best validation epoch is shown apart, "
        "as the study reported it, and is optimistic.</p>"
    )
    body.append(table_html(pd.DataFrame(rows)))

    figure_dir = Path(figure_dir)
    for name, (metrics, _) in results.items():
        body.append(f'<h3 id="model-{html.escape(name)}">{html.escape(name)}</h3>')
        body.append(table_html(per_species_table(metrics)))
        body.append(open_set_paragraph(metrics))
        body.append(embedding_paragraph(metrics))
        for figure in MODEL_FIGURES:
            body.append(inline_png(figure_dir / name / f"{figure.stem}.png", f"{name}: {figure.caption}", figure.wide))

    nav = " · ".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in [("provenance", "Provenance"), ("datasets", "Datasets"), ("models", "Models")]
    )
    page = PAGE.format(
        title=html.escape(config["report"]["title"]),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=fishid.__version__,
        nav=nav,
        body="\n".join(body),
    )
    Path(out_path).write_text(page)
