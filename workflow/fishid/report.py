"""The report: one HTML page with the dataset tables, the model table and every figure."""

import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import fishid
from fishid.tables import read_table

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #eef; }} img {{ max-width: 100%; }} .note {{ background: #ffd; padding: 0.5em 1em; }}
</style></head><body>
<h1>{title}</h1>
<p>Generated {generated} by fishid {version}.</p>
{body}
</body></html>
"""


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def model_row(name: str, settings: dict, metrics: dict) -> dict:
    return {
        "model": name,
        "architecture": settings["arch"],
        "dataset": settings["dataset"],
        "backbone": settings.get("backbone", ""),
        "control of": settings.get("control_of", ""),
        "epochs": settings["epochs"],
        "evaluated on": metrics["evaluated_on"],
        "accuracy": f"{metrics['accuracy']:.3f} ({metrics['correct']}/{metrics['n']})",
        "majority baseline": f"{metrics['majority_baseline']:.3f}",
    }


def per_species_table(metrics: dict) -> pd.DataFrame:
    rows = [
        {"label": label, "images": row["n"], "correct": row["correct"], "accuracy": f"{row['accuracy']:.3f}"}
        for label, row in metrics["per_species"].items()
    ]
    return pd.DataFrame(rows)


def sources_section(clean: pd.DataFrame, records: pd.DataFrame) -> str:
    by_source = records.groupby(["source", "license"]).size().rename("records").reset_index()
    kept = clean["kept"].astype(str) == "True"
    dropped = clean[~kept]["reason"].str.split(":").str[0].value_counts().rename_axis("reason")
    dropped = dropped.rename("images").reset_index()
    return (
        "<h2>Sources and cleaning</h2>"
        + table_html(by_source)
        + f"<p>{kept.sum()} images kept out of {len(clean)} stored.</p>"
        + (table_html(dropped) if len(dropped) else "<p>No image was dropped.</p>")
    )


def build(config: dict, clean_path, record_paths, counts_paths, metrics_paths, figure_dir, out_path):
    """`counts_paths` are the splits' `{dataset}.counts.tsv`, `metrics_paths` the models'
    `metrics.json`: each file names what it belongs to, so their order does not matter."""
    out_dir = Path(out_path).parent
    figure_dir = Path(figure_dir)

    def link(path):
        return html.escape(os.path.relpath(path, out_dir))

    def img(path, caption):
        src, caption = link(path), html.escape(caption)
        return f'<figure><img src="{src}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'

    records = pd.concat([read_table(p) for p in record_paths])
    clean = read_table(clean_path)
    body = [sources_section(clean, records)]

    body.append("<h2>Datasets</h2>")
    for path in counts_paths:
        dataset = Path(path).name.removesuffix(".counts.tsv")
        figure = figure_dir / "datasets" / f"{dataset}.png"
        body.append(f"<h3>{html.escape(dataset)}</h3>" + table_html(pd.read_csv(path, sep="\t")))
        svg = figure.with_suffix(".svg")
        body.append(f'<p>As a figure: <a href="{link(figure)}">PNG</a>, <a href="{link(svg)}">SVG</a></p>')

    rows, sections, names = [], [], []
    for path in metrics_paths:
        metrics = json.loads(Path(path).read_text())
        name = metrics["model"]
        names.append(name)
        settings = config["models"][name]
        rows.append(model_row(name, settings, metrics))
        sections.append(f"<h3>{html.escape(name)}</h3>")
        sections.append(table_html(per_species_table(metrics)))
        sections.append(img(figure_dir / name / "curves.png", f"{name}: loss and accuracy per epoch"))
        sections.append(
            img(figure_dir / name / "confusion.png", f"{name}: confusion matrix on {metrics['evaluated_on']}")
        )
    body.append("<h2>Models</h2>")
    backbones = config.get("backbones", {})
    notes = [
        f"Backbone <b>{html.escape(b)}</b>: {html.escape(spec['description'])}"
        for b, spec in backbones.items()
        if any(config["models"][m].get("backbone") == b for m in names)
    ]
    body.extend(f'<p class="note">{n}</p>' for n in notes)
    body.append(table_html(pd.DataFrame(rows)))
    body.extend(sections)

    page = PAGE.format(
        title=html.escape(config["report"]["title"]),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=fishid.__version__,
        body="\n".join(body),
    )
    Path(out_path).write_text(page)
