"""The report: one self-contained HTML file (figures inlined) opening with a summary chart,
then provenance, datasets, the model comparison and every figure with its caption. The page
is templates/report.html.j2; this module turns the stage tables into the data it shows."""

import base64
import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup
from PIL import Image

import fishid
from fishid import steps
from fishid.report import figures
from fishid.report.figure_list import MODEL_FIGURES
from fishid.tables import LEAK, read_table

# Every value from a source (rights holders, creators, taxa, URLs, file names) reaches the page
# through the template, which escapes it.
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("fishid.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

log = logging.getLogger(__name__)
# CSS pixels a figure takes on the page (a 1150 px column; a figure not wide gets half of it).
# The files on disk stay full size; the page carries them at this width, which keeps the demo's
# 128 figures to a few MB instead of 18.
WIDE_WIDTH, NARROW_WIDTH = 1120, 540
# Grids of photos shrink far more as lossy WebP (quality 70: 470 kB of PNG to 40 kB, no visible
# loss at this size); charts stay sharp as PNGs of 64 colours (a fifth smaller than 256, no banding).
PHOTO_FIGURES = {"saliency", "misclassified"}
PHOTO_QUALITY, CHART_COLOURS = 70, 64


def table(frame: pd.DataFrame) -> dict:
    """A table for the template: its column names and its cells as text (missing ones empty)."""
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)],
    }


def display_image(png: bytes, width: int, photo: bool) -> dict:
    """The figure scaled down to `width` pixels (never up) and compressed: the data URI of an
    <img> and its pixel size."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if photo:
        mime = "image/webp"
        image.save(out, "WEBP", quality=PHOTO_QUALITY, method=6)
    else:
        mime = "image/png"
        # Dithering would speckle the flat colours of a chart, which compress to almost nothing.
        image.quantize(CHART_COLOURS, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    data = base64.b64encode(out.getvalue()).decode("ascii")
    return {"src": f"data:{mime};base64,{data}", "width": image.width, "height": image.height}


def figure(path, caption: str, wide: bool, photo: bool) -> dict:
    image = display_image(Path(path).read_bytes(), WIDE_WIDTH if wide else NARROW_WIDTH, photo)
    return {**image, "caption": caption, "wide": wide}


def interval(value: float, ci) -> str:
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def reason_counts(reasons: pd.Series, stage: str) -> pd.DataFrame:
    """How many records or images each kind of reason (its text before the first colon) holds."""
    counts = reasons.str.split(":").str[0].value_counts().sort_index(kind="stable")
    counts = counts.sort_values(ascending=False, kind="stable")
    return pd.DataFrame({"stage": stage, "reason": counts.index, "count": counts.to_numpy()})


def provenance(records: pd.DataFrame, downloads: pd.DataFrame, clean: pd.DataFrame) -> dict:
    """Images per source, licence and species; why images were dropped; who to credit."""
    stored = records.merge(downloads[["record_id", "sha256"]], on="record_id")
    kept_hashes = set(clean.loc[clean["kept"].astype(str) == "True", "sha256"])
    stored["kept"] = stored["sha256"].isin(kept_hashes)
    by_source = (
        stored.groupby(["source", "license"]).agg(records=("record_id", "size"), kept=("kept", "sum")).reset_index()
    )
    by_species = pd.crosstab(stored["taxon"], stored["source"]).reset_index().rename(columns={"taxon": "species"})
    dropped = pd.concat(
        [
            reason_counts(downloads.loc[downloads["error"].astype(str) != "", "error"], "download"),
            reason_counts(clean.loc[clean["kept"].astype(str) != "True", "reason"], "cleaning"),
        ],
        ignore_index=True,
    )
    credits = (
        stored[stored["kept"]]
        .groupby(["source", "license", "rights_holder", "creator"])
        .agg(images=("sha256", "nunique"), example=("page_url", "first"))
        .reset_index()
    )
    return {
        "by_source": table(by_source),
        "by_species": table(by_species),
        "kept": len(kept_hashes),
        "stored": len(clean),
        "listed": len(records),
        "dropped": table(dropped) if len(dropped) else None,
        "credits": table(credits),
        "holders": len(credits),
    }


def leak_table(decisions: pd.DataFrame) -> pd.DataFrame:
    leaked = decisions[decisions["decision"] == LEAK]
    return leaked[["group", "label", "sha256", "reason"]].sort_values(["group", "sha256"])


def near_duplicate_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per held-out role (val, test, each benchmark): near-duplicate pairs with a training
    photo, zero shown as zero for the split's own roles."""
    roles = ["val", "test", *sorted(r for r in set(pairs["held_out"]) if r not in ("val", "test"))]
    by_role = pairs.groupby("held_out")
    return pd.DataFrame(
        {
            "training photo paired with": roles,
            "near-duplicate pairs": [by_role.size().get(r, 0) for r in roles],
            "training photos involved": [pairs.loc[pairs["held_out"] == r, "train_sha256"].nunique() for r in roles],
        }
    )


def datasets(counts_paths, decision_paths=(), leak_paths=()) -> list[dict]:
    """Each dataset's counts, the images its given split left linked across roles (leaks),
    and the near-duplicate pairs across its training and held-out photos."""
    leaks = {Path(p).name.removesuffix(".decisions.tsv"): leak_table(read_table(p)) for p in decision_paths}
    pairs = {Path(p).name.removesuffix(".leaks.tsv"): read_table(p) for p in leak_paths}
    shown = []
    for path in counts_paths:
        name = Path(path).name.removesuffix(".counts.tsv")
        leaked = leaks.get(name)
        has_leaks = leaked is not None and len(leaked) > 0
        shown.append(
            {
                "name": name,
                "counts": table(pd.read_csv(path, sep="\t")),
                "leaks": table(leaked) if has_leaks else None,
                "leak_groups": leaked["group"].nunique() if has_leaks else 0,
                "near_duplicates": table(near_duplicate_counts(pairs[name])) if name in pairs else None,
            }
        )
    return shown


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


def source_result(row: dict | None) -> str:
    """One source's accuracy, or why it is not shown."""
    if row is None:
        return ""
    if row["too_few"]:
        return f"too few photos to say ({row['correct']}/{row['n']})"
    return f"{interval(row['accuracy'], row['accuracy_ci95'])} ({row['correct']}/{row['n']})"


def cross_source_table(results: dict, settings: dict) -> pd.DataFrame | None:
    """Rows: each model and the sources it trained on; columns: the source it was tested on.
    None where no model was evaluated on more than one source, nor off its training sources."""
    sources = sorted({s for metrics, _ in results.values() for s in metrics.get("by_source", {})})
    unseen = any(set(m.get("by_source", {})) - set(m.get("trained_on", [])) for m, _ in results.values())
    if len(sources) < 2 and not unseen:
        return None
    rows = []
    for name, (metrics, _) in results.items():
        trained_on = metrics.get("trained_on", [])
        row = {"model": name, "dataset": settings[name]["dataset"], "trained on": ", ".join(trained_on)}
        for source in sources:
            shown = source_result(metrics.get("by_source", {}).get(source))
            row[f"tested on {source}"] = f"{shown} (unseen)" if shown and source not in trained_on else shown
        rows.append(row)
    return pd.DataFrame(rows)


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


def decimal(value) -> str:
    """A share or accuracy to three places; empty where there is none."""
    return "" if value is None or pd.isna(value) else f"{value:.3f}"


def rank_table(by_rank: dict) -> pd.DataFrame:
    """Per rank: the top class's accuracy rolled up to it, and the fallback rule's threshold,
    share of photos answered there and accuracy of those answers."""
    fallback = by_rank["fallback"]
    rows = [
        {
            "rank": rank,
            "top class right at this rank": decimal(by_rank["accuracy"][rank]),
            "fallback threshold": "never" if t is None else f"{t:.2f}",
            "answered at this rank": decimal(fallback["answered"][rank]),
            "right when answered here": decimal(fallback["accuracy_at"][rank]),
        }
        for rank, t in fallback["thresholds"].items()
    ]
    rows.append({"rank": "no answer", "answered at this rank": decimal(fallback["answered"]["none"])})
    return pd.DataFrame(rows).fillna("")


def rank_view(by_rank: dict | None, evaluated_on: str) -> dict | None:
    """A model's by-rank numbers for its section: a table where its classes span more than one
    genus or family, a line otherwise; None for metrics from before ranks."""
    if by_rank is None:
        return None
    fallback = by_rank["fallback"]
    chosen_on = fallback["chosen_on"]
    optimistic = (
        " (chosen on the photos reported here: optimistic)"
        if chosen_on in (evaluated_on, "the evaluated photos")
        else ""
    )
    answered = ", ".join(f"{rank} {decimal(fallback['answered'][rank])}" for rank in fallback["answered"])
    rule = (
        f"Fallback rule (thresholds chosen on {chosen_on}{optimistic}, each the lowest at which the answers at its "
        f"rank were at least {fallback['target_accuracy']:.0%} right): "
    )
    summary = (
        f"{rule}it answers the species for {decimal(fallback['coverage'])} of the photos (at each rank: {answered}); "
        f"its answers are right {decimal(fallback['accuracy'])} of the time, {decimal(fallback['mean_distance'])} "
        f"taxonomic steps from the truth on average (the top class: {decimal(by_rank['mean_distance'])})."
    )
    curve = pd.DataFrame(by_rank["coverage_curve"]).assign(
        threshold=lambda c: c["threshold"].map("{:.2f}".format),
        coverage=lambda c: c["coverage"].map(decimal),
        accuracy=lambda c: c["accuracy"].map(decimal),
    )
    view = {"summary": summary, "table": None, "curve": table(curve)}
    if len(by_rank["genera"]) > 1 or len(by_rank["families"]) > 1:
        return {**view, "table": table(rank_table(by_rank))}
    if by_rank["genera"]:
        within = (
            f"All classes are of genus {by_rank['genera'][0]}, so ranks above the species tell them no further apart. "
        )
    else:
        within = "No class has a known genus: the rule can only answer the species. "
    return {**view, "summary": within + summary}


def best_pair_threshold(metrics: dict) -> dict | None:
    """For an embedding model, the distance threshold that best tells same species from different."""
    embedding = metrics.get("embedding")
    return max(embedding["pairs"], key=lambda row: row["accuracy"]) if embedding else None


def summary_rows(results: dict) -> list[dict]:
    return [
        {
            "model": name,
            "accuracy": metrics["accuracy"],
            "ci95": metrics["accuracy_ci95"],
            "majority_baseline": metrics["majority_baseline"],
        }
        for name, (metrics, _) in results.items()
    ]


def model_section(name: str, metrics: dict, figure_dir: Path) -> dict:
    return {
        "name": name,
        "species": table(per_species_table(metrics)),
        "open_set": metrics.get("open_set"),
        "by_rank": rank_view(metrics.get("by_rank"), metrics["evaluated_on"]),
        "embedding": metrics.get("embedding"),
        "best_pair": best_pair_threshold(metrics),
        "figures": [
            figure(figure_dir / name / f"{f.stem}.png", f"{name}: {f.caption}", f.wide, f.stem in PHOTO_FIGURES)
            for f in MODEL_FIGURES
        ],
    }


def read_results(model_dirs) -> dict:
    """Model name -> (metrics.json, history.csv), in the order of `model_dirs`."""
    results = {}
    for folder in map(Path, model_dirs):
        metrics = json.loads((folder / "metrics.json").read_text())
        results[metrics["model"]] = (metrics, pd.read_csv(folder / "history.csv"))
    return results


def citing(citation_path, derived_path) -> dict | None:
    """What the citation step wrote (results/provenance): shown as text and a table, escaped."""
    if citation_path is None:
        return None
    derived = read_table(derived_path) if derived_path else pd.DataFrame()
    return {"text": Path(citation_path).read_text(), "derived": table(derived) if len(derived) else None}


def crop_pairs(results: dict, settings: dict) -> pd.DataFrame | None:
    """Each model on crops beside the model of the same settings on whole photos, if there is one."""
    rows = []
    for name, spec in settings.items():
        if "crop" not in spec or name not in results:
            continue
        whole = {k: v for k, v in spec.items() if k not in ("crop", "control_of")}
        twin = next((n for n, other in settings.items() if n in results and other == whole), None)
        crops = results[name][0]
        row = {"model on crops": name, "detector": spec["crop"], "evaluated on": crops["evaluated_on"]}
        row["accuracy [95% CI]"] = interval(crops["accuracy"], crops["accuracy_ci95"])
        row["same model on whole photos"] = twin or "(none configured)"
        if twin:
            row["its accuracy [95% CI]"] = interval(results[twin][0]["accuracy"], results[twin][0]["accuracy_ci95"])
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def detection(quality: dict | None, sheet_path) -> dict | None:
    """The detect stage's numbers, per scene, and its sheet of crops, for the page."""
    if quality is None:
        return None
    scenes = {"all": quality["quality"], **quality["by_scene"]}
    frame = pd.DataFrame(
        [
            {
                "scene": scene,
                "photos": q["photos"],
                "fish": q["fish"],
                "mAP@0.5": decimal(q["map50"]),
                "mean IoU": decimal(q["mean_iou"]),
                "photos without a box": q["photos_without_box"],
            }
            for scene, q in scenes.items()
        ]
    )
    caption = (
        "Test photos of each scene with the box the crop follows (left) and the crop (right); last, photos "
        "where no fish was found (the queue results/detect/no_fish.tsv)."
    )
    return {**quality, "scenes": table(frame), "sheet": figure(sheet_path, caption, wide=True, photo=True)}


def page(
    config: dict,
    records,
    downloads,
    clean,
    counts_paths,
    decision_paths,
    results: dict,
    figure_dir,
    citation=None,
    leak_paths=(),
    label_issues=None,
    detected=None,
) -> str:
    controls = {
        spec["control_of"]: (name, results[name][0])
        for name, spec in config["models"].items()
        if spec.get("control_of") and name in results
    }
    used = {config["models"][n].get("backbone") for n in results}
    cross = cross_source_table(results, config["models"])
    return TEMPLATES.get_template("report.html.j2").render(
        title=config["report"]["title"],
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=fishid.__version__,
        # matplotlib escapes the text it writes into the SVG.
        summary=Markup(figures.svg_text(figures.summary_chart(summary_rows(results)))),
        provenance=provenance(records, downloads, clean),
        citation=citation,
        label_issues=label_issues,
        datasets=datasets(counts_paths, decision_paths, leak_paths),
        backbones={b: spec["description"] for b, spec in config.get("backbones", {}).items() if b in used},
        models=table(
            pd.DataFrame([model_row(n, config["models"][n], m, h, controls) for n, (m, h) in results.items()])
        ),
        cross_source=None if cross is None else table(cross),
        detection=detected,
        crop_pairs=None if (pairs := crop_pairs(results, config["models"])) is None else table(pairs),
        sections=[model_section(name, metrics, Path(figure_dir)) for name, (metrics, _) in results.items()],
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
    citation_path=None,
    derived_path=None,
    leak_paths=(),
    label_issues_path=None,
    detect_path=None,
    detect_sheet_path=None,
):
    """`model_dirs` hold each model's metrics.json and history.csv; every file names what it
    belongs to, so the order of the paths does not matter."""
    records = pd.concat([read_table(p) for p in record_paths])
    downloads = pd.concat([read_table(p) for p in download_paths])
    html = page(
        config,
        records,
        downloads,
        read_table(clean_path),
        counts_paths,
        decision_paths,
        read_results(model_dirs),
        figure_dir,
        citing(citation_path, derived_path),
        leak_paths,
        json.loads(Path(label_issues_path).read_text()) if label_issues_path else None,
        detection(json.loads(Path(detect_path).read_text()) if detect_path else None, detect_sheet_path),
    )
    Path(out_path).write_text(html)


@steps.declare(
    "report",
    "the HTML report",
    steps.SPEC,
    steps.inp("clean"),
    steps.inp("records", nargs="+"),
    steps.inp("downloads", nargs="+"),
    steps.inp("counts", nargs="+"),
    steps.inp("decisions", nargs="+", default=[], help="the datasets' decisions tables (leaks)"),
    steps.inp("leaks", nargs="+", default=[], help="the datasets' near-duplicate pairs across roles"),
    steps.inp("metrics", nargs="+"),
    steps.inp("citation", default=None, help="results/provenance/citation.md"),
    steps.inp("derived", default=None, help="results/provenance/derived_dataset.tsv"),
    steps.inp("label_issues", default=None, help="results/review/label_issues.json (the queue's summary)"),
    steps.inp("detect", default=None, help="results/detect/quality.json, where there is a detect stage"),
    steps.inp("detect_sheet", default=None, help="results/detect/crops.png"),
    steps.par("figures"),
    steps.out("out", key=""),
)
def report_step(
    spec,
    clean,
    records,
    downloads,
    counts,
    metrics,
    figures,
    out,
    decisions=(),
    leaks=(),
    citation=None,
    derived=None,
    label_issues=None,
    detect=None,
    detect_sheet=None,
):
    """The `report` step (rule report): each model's folder is its metrics file's."""
    build(
        spec,
        records,
        downloads,
        clean,
        counts,
        [Path(p).parent for p in metrics],
        figures,
        out,
        decision_paths=decisions,
        citation_path=citation,
        derived_path=derived,
        leak_paths=leaks,
        label_issues_path=label_issues,
        detect_path=detect,
        detect_sheet_path=detect_sheet,
    )
