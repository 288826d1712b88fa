"""`fishid audit`: where an image came from and where it went, from the stage tables alone.

For an image (its SHA-256, or a unique prefix of at least 6 hex digits): its source records
(URL, licence, rights holder, occurrence), its download, the cleaning decision, its rows in
every dataset's split (or why it was left out), the backbones and models trained on those
datasets and their predictions for it. For a species or a model: the same chain, summed up.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fishid.report.attribution import stored_records
from fishid.tables import LEAK, read_if_there, read_table
from fishid.text import escape_text

MISTAKES_SHOWN = 20
DETECT_DIR = "results/detect"


@dataclass
class Provenance:
    """Every stage table of one run (a project folder), as strings."""

    root: Path
    records: pd.DataFrame
    downloads: pd.DataFrame
    clean: pd.DataFrame
    splits: pd.DataFrame
    decisions: pd.DataFrame
    models: dict = field(default_factory=dict)  # name -> meta.json (+ metrics.json as "metrics")
    backbones: dict = field(default_factory=dict)  # name -> meta.json
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    crops: pd.DataFrame = field(default_factory=pd.DataFrame)  # the detect stage's, where it ran
    no_fish: pd.DataFrame = field(default_factory=pd.DataFrame)


# A table listed a moment ago may be gone when read (a running Snakemake removes a job's old
# outputs first): it counts as not made yet (tables.read_if_there).
def _table_if_there(path) -> pd.DataFrame | None:
    return read_if_there(read_table, path)


def _concat(paths) -> pd.DataFrame:
    tables = [t for t in map(_table_if_there, sorted(paths)) if t is not None]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _json(path: Path) -> dict:
    return read_if_there(lambda p: json.loads(p.read_text()), path, {})


def input_files(root=".") -> dict[str, list[Path]]:
    """The files load() reads, by what they hold (listed now: a partial run has fewer)."""
    root = Path(root)
    splits_dir = root / "results/splits"
    metas = sorted((root / "results/models").glob("*/meta.json"))
    return {
        # {source}.tsv only: a source's other tables ({source}.summary.tsv) share the folder.
        "records": sorted(p for p in (root / "resources/records").glob("*.tsv") if p.name.count(".") == 1),
        "downloads": sorted(p for p in (root / "resources/downloads").glob("*.tsv") if p.name.count(".") == 1),
        "clean": [root / "results/clean/images.tsv"],
        "splits": sorted(p for p in splits_dir.glob("*.tsv") if p.name.count(".") == 1),
        "decisions": sorted(splits_dir.glob("*.decisions.tsv")),
        "models": metas,
        # Read from each model's folder beside its meta.json.
        "model_outputs": [p.parent / name for p in metas for name in ("metrics.json", "predictions.tsv")],
        "backbones": sorted((root / "results/backbones").glob("*/meta.json")),
        "detect": [root / DETECT_DIR / "crops.tsv", root / DETECT_DIR / "no_fish.tsv"],
    }


def signature(files: dict[str, list[Path]]) -> tuple:
    """What changes when any of `files` is written, made, or removed: each path with its
    modification time and size (None where it is missing)."""
    out = []
    for path in (p for paths in files.values() for p in paths):
        try:
            stat = path.stat()
            out.append((str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            out.append((str(path), None))
    return tuple(out)


def load(root=".", files: dict[str, list[Path]] | None = None) -> Provenance:
    """Read a run's tables under `root` (those input_files lists, or `files`); what a
    partial run has not made yet is left empty."""
    root = Path(root)
    files = files if files is not None else input_files(root)
    if not files["records"]:
        raise ValueError(
            f"no source records under {root / 'resources/records'}: run the pipeline first, "
            "or `fishid restore` a snapshot, then audit from the project folder (or pass --root)"
        )
    splits = _concat(files["splits"])
    clean = _table_if_there(files["clean"][0])
    models, predictions = {}, []
    for meta_path in files["models"]:
        folder = meta_path.parent
        models[folder.name] = {**_json(meta_path), "metrics": _json(folder / "metrics.json")}
        predictions.append(_table_if_there(folder / "predictions.tsv"))
    predictions = [t for t in predictions if t is not None]
    backbones = {p.parent.name: _json(p) for p in files["backbones"]}
    return Provenance(
        root=root,
        records=_concat(files["records"]),
        downloads=_concat(files["downloads"]),
        clean=clean if clean is not None else pd.DataFrame(columns=["sha256", "kept", "taxon"]),
        splits=splits if len(splits.columns) else pd.DataFrame(columns=["dataset", "sha256", "label", "split"]),
        decisions=_concat(files["decisions"]),
        models=models,
        backbones=backbones,
        predictions=pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(),
        crops=_optional(files["detect"][0]),
        no_fish=_optional(files["detect"][1]),
    )


def _optional(path: Path) -> pd.DataFrame:
    table = _table_if_there(path)
    return table if table is not None else pd.DataFrame(columns=["image"])


def _grouped(table: pd.DataFrame, columns: list[str]) -> dict[str, int]:
    """Row counts per group, keyed "a / b" (JSON has no tuple keys)."""
    if not len(table):
        return {}
    sizes = table.groupby(columns).size()
    return {" / ".join(k) if isinstance(k, tuple) else str(k): int(v) for k, v in sizes.items()}


def _dataset_of(meta: dict) -> str:
    return meta.get("settings", {}).get("dataset", "")


def _backbone_of(meta: dict) -> str:
    return meta.get("settings", {}).get("backbone", "")


def users_of_datasets(prov: Provenance, datasets) -> dict:
    """Backbones pre-trained on, and models trained on, any of `datasets` (directly or through
    a backbone): {"backbones": [...], "models": [...]}."""
    datasets = set(datasets)
    backbones = sorted(name for name, meta in prov.backbones.items() if _dataset_of(meta) in datasets)
    models = sorted(
        name for name, meta in prov.models.items() if _dataset_of(meta) in datasets or _backbone_of(meta) in backbones
    )
    return {"backbones": backbones, "models": models}


def resolve(prov: Provenance, query: str) -> tuple[str, str]:
    """What the query names: ("image", sha256), ("model", name) or ("species", taxon)."""
    query = query.strip()
    if query in prov.models:
        return "model", query
    if re.fullmatch(r"[0-9a-fA-F]{6,64}", query):
        known = pd.concat([prov.clean.get("sha256", pd.Series(dtype=str)), prov.downloads.get("sha256")]).dropna()
        matches = sorted(set(known[known.str.startswith(query.lower())]))
        if len(matches) == 1:
            return "image", matches[0]
        if len(matches) > 1:
            raise ValueError(f"{query!r} is the start of {len(matches)} image hashes: give more of it")
        raise ValueError(f"no image with a hash starting {query!r} in {prov.root}")
    taxa = {t.lower(): t for t in set(prov.records["taxon"]) | set(prov.clean.get("taxon", []))}
    if query.lower() in taxa:
        return "species", taxa[query.lower()]
    raise ValueError(
        f"{query!r} is not an image hash, a model (known: {', '.join(sorted(prov.models)) or 'none yet'}) "
        f"or a species in the records (e.g. {sorted(taxa.values())[0]!r})"
    )


def image_chain(prov: Provenance, sha256: str) -> dict:
    """Everything the tables know about one image, in pipeline order."""
    linked = stored_records(prov.records, prov.downloads)
    records = linked[linked["sha256"] == sha256]
    downloads = prov.downloads[prov.downloads["sha256"] == sha256]
    clean = prov.clean[prov.clean["sha256"] == sha256]
    splits = prov.splits[prov.splits["sha256"] == sha256]
    decisions = prov.decisions[prov.decisions["sha256"] == sha256] if len(prov.decisions) else prov.decisions
    leaked = decisions["decision"] == LEAK if len(decisions) else []
    users = users_of_datasets(prov, set(splits["dataset"]))
    predictions = prov.predictions[prov.predictions["sha256"] == sha256] if len(prov.predictions) else prov.predictions
    crops, no_fish = prov.crops[prov.crops["image"] == sha256], prov.no_fish[prov.no_fish["image"] == sha256]
    return {
        "sha256": sha256,
        "records": records.drop(columns="sha256").to_dict("records"),
        "downloads": downloads.to_dict("records"),
        "clean": clean.iloc[0].to_dict() if len(clean) else None,
        "crop": crops.iloc[0].to_dict() if len(crops) else None,
        "no_fish": no_fish.iloc[0].to_dict() if len(no_fish) else None,
        "splits": splits[["dataset", "label", "split"]].to_dict("records"),
        "left_out": decisions[~leaked][["dataset", "decision", "reason"]].to_dict("records") if len(decisions) else [],
        "leaks": decisions[leaked][["dataset", "reason"]].to_dict("records") if len(decisions) else [],
        "backbones": [{"name": b, "dataset": _dataset_of(prov.backbones[b])} for b in users["backbones"]],
        "models": [
            {"name": m, "dataset": _dataset_of(prov.models[m]), "backbone": _backbone_of(prov.models[m])}
            for m in users["models"]
        ],
        "predictions": predictions[["model", "split", "label", "predicted"]].to_dict("records")
        if len(predictions)
        else [],
    }


def species_chain(prov: Provenance, taxon: str) -> dict:
    records = prov.records[prov.records["taxon"] == taxon]
    ids = set(records["record_id"])
    downloads = prov.downloads[prov.downloads["record_id"].isin(ids)]
    clean = prov.clean[prov.clean["taxon"] == taxon] if "taxon" in prov.clean else prov.clean.iloc[0:0]
    splits = prov.splits[prov.splits["taxon"] == taxon] if "taxon" in prov.splits else prov.splits.iloc[0:0]
    decisions = prov.decisions[prov.decisions["taxon"] == taxon] if len(prov.decisions) else prov.decisions
    if len(decisions):
        decisions = decisions[decisions["decision"] != LEAK]
    users = users_of_datasets(prov, set(splits["dataset"]))
    accuracy = {}
    for name in users["models"]:
        evaluated_on = prov.models[name].get("metrics", {}).get("evaluated_on")
        if not len(prov.predictions) or evaluated_on is None:
            continue
        rows = prov.predictions[(prov.predictions["model"] == name) & (prov.predictions["split"] == evaluated_on)]
        rows = rows[rows["sha256"].isin(set(splits["sha256"]))]
        if len(rows):
            accuracy[name] = {
                "split": evaluated_on,
                "n": len(rows),
                "correct": int((rows["label"] == rows["predicted"]).sum()),
            }
    return {
        "taxon": taxon,
        "records_by_source_and_license": _grouped(records, ["source", "license"]),
        "rights_holders": sorted(set(records["rights_holder"]) - {""}),
        "downloaded": int((downloads["error"] == "").sum()),
        "download_failed": int((downloads["error"] != "").sum()),
        "kept": int((clean["kept"] == "True").sum()),
        "dropped_by_reason": _grouped(clean[clean["kept"] != "True"], ["reason"]),
        "splits": _grouped(splits, ["dataset", "label", "split"]),
        "left_out": _grouped(decisions, ["dataset", "decision"]),
        "backbones": users["backbones"],
        "models": users["models"],
        "accuracy": accuracy,
    }


def model_chain(prov: Provenance, name: str) -> dict:
    meta = prov.models[name]
    dataset = _dataset_of(meta)
    backbone = _backbone_of(meta)
    used = prov.splits[prov.splits["dataset"] == dataset]
    trained_on = used[used["split"] == "train"]
    linked = stored_records(prov.records, prov.downloads)
    sources = linked[linked["sha256"].isin(set(used["sha256"]))]
    predictions = prov.predictions[prov.predictions["model"] == name] if len(prov.predictions) else pd.DataFrame()
    mistakes = predictions[predictions["label"] != predictions["predicted"]] if len(predictions) else predictions
    backbone_meta = prov.backbones.get(backbone, {})
    return {
        "model": name,
        "settings": meta.get("settings", {}),
        "classes": meta.get("classes", []),
        "device": meta.get("device", ""),
        "dataset": dataset,
        "images_by_label_and_split": _grouped(used, ["label", "split"]),
        "training_images": len(trained_on),
        "backbone": {"name": backbone, "dataset": _dataset_of(backbone_meta)} if backbone else None,
        "records_by_source_and_license": _grouped(sources, ["source", "license"]),
        "rights_holders": sorted(set(sources["rights_holder"]) - {""}),
        "metrics": {k: meta["metrics"].get(k) for k in ("evaluated_on", "n", "correct", "accuracy")},
        "predictions": len(predictions),
        "mistakes": mistakes[["sha256", "split", "label", "predicted"]].to_dict("records") if len(mistakes) else [],
    }


def audit(prov: Provenance, query: str) -> tuple[str, dict]:
    kind, key = resolve(prov, query)
    chain = {"image": image_chain, "species": species_chain, "model": model_chain}[kind](prov, key)
    return kind, chain


def _escaped(value):
    """Every string in a chain (keys included), escaped for a terminal."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_escaped(v) for v in value)
    return value


def _counts(mapping: dict) -> list[str]:
    return [f"    {k}: {v}" for k, v in mapping.items()] or ["    (none)"]


def format_image(chain: dict) -> str:
    chain = _escaped(chain)
    lines = [f"image {chain['sha256']}", f"source records ({len(chain['records'])}):"]
    for r in chain["records"]:
        lines += [
            f"  {r['record_id']}  [{r['source']}] {r['taxon']} (listed as {r['source_taxon']!r})",
            f"    media URL:   {r['media_url']}",
            f"    page URL:    {r['page_url'] or '-'}",
            f"    licence:     {r['license'] or 'UNKNOWN'}   rights holder: {r['rights_holder'] or '-'}"
            f"   creator: {r['creator'] or '-'}",
            f"    occurrence:  {r['occurrence_id'] or '-'} ({r['basis_of_record'] or '-'}, dataset "
            f"{r['dataset_key'] or '-'}), listed {r['listed_at']}",
        ]
    lines.append("download:")
    for d in chain["downloads"]:
        lines.append(
            f"  {d['record_id']} -> resources/images/{d['path']} ({d['bytes']} bytes, {d['content_type']}, "
            f"HTTP {d['http_status'] or '-'}, {d['retrieved_at']}){' ERROR ' + d['error'] if d['error'] else ''}"
        )
    c = chain["clean"]
    if c is None:
        lines.append("cleaning: not cleaned yet")
    elif c["kept"] == "True":
        lines.append(f"cleaning: kept ({c['width']}x{c['height']} {c['format']}, taxon {c['taxon']})")
    else:
        why = c["reason"] + (f", duplicate of {c['duplicate_of']}" if c["duplicate_of"] else "")
        lines.append(f"cleaning: DROPPED ({why})")
    # A chain from before the detect stage (or written by hand) may not say.
    if chain.get("crop"):
        k = chain["crop"]
        lines.append(
            f"detection: cropped to {DETECT_DIR}/crops/{k['path']} by detector {k['detector']}: box "
            f"({k['x0']}, {k['y0']})-({k['x1']}, {k['y1']}) score {k['score']}, padding {k['padding']}, cut "
            f"({k['crop_x0']}, {k['crop_y0']})-({k['crop_x1']}, {k['crop_y1']}) of the photo"
        )
    elif chain.get("no_fish"):
        q = chain["no_fish"]
        lines.append(
            f"detection: NO FISH FOUND by detector {q['detector']} (best score {q['best_score'] or 'none'}, "
            f"threshold {q['threshold']}; reason {q['reason']}): in the queue {DETECT_DIR}/no_fish.tsv;"
            " models on crops see it whole"
        )
    lines.append("splits:")
    lines += [f"  {s['dataset']}: {s['split']} as {s['label']!r}" for s in chain["splits"]]
    lines += [f"  {s['dataset']}: left out ({s['decision']}: {s['reason']})" for s in chain["left_out"]]
    lines += [f"  {s['dataset']}: LEAK ({s['reason']})" for s in chain["leaks"]]
    if not chain["splits"] and not chain["left_out"]:
        lines.append("  (in no dataset)")
    lines.append("backbones pre-trained on it:")
    lines += [f"  {b['name']} (dataset {b['dataset']})" for b in chain["backbones"]] or ["  (none)"]
    lines.append("models that used it:")
    for m in chain["models"]:
        via = f" via backbone {m['backbone']}" if m["backbone"] in {b["name"] for b in chain["backbones"]} else ""
        lines.append(f"  {m['name']} (dataset {m['dataset']}{via})")
    if not chain["models"]:
        lines.append("  (none)")
    lines.append("predictions:")
    for p in chain["predictions"]:
        verdict = "right" if p["label"] == p["predicted"] else "WRONG"
        lines.append(f"  {p['model']} on {p['split']}: {p['predicted']!r} for {p['label']!r} ({verdict})")
    if not chain["predictions"]:
        lines.append("  (none: the image is in no evaluated split)")
    return "\n".join(lines)


def format_species(chain: dict) -> str:
    chain = _escaped(chain)
    lines = [f"species {chain['taxon']}", "records by source / licence:"]
    lines += _counts(chain["records_by_source_and_license"])
    lines.append(f"rights holders: {', '.join(chain['rights_holders']) or '-'}")
    lines.append(f"downloads: {chain['downloaded']} stored, {chain['download_failed']} failed")
    lines.append(f"cleaning: {chain['kept']} kept; dropped by reason:")
    lines += _counts(chain["dropped_by_reason"])
    lines.append("splits (dataset / label / split):")
    lines += _counts(chain["splits"])
    lines.append("left out (dataset / decision):")
    lines += _counts(chain["left_out"])
    lines.append(f"backbones pre-trained on it: {', '.join(chain['backbones']) or '-'}")
    lines.append(f"models that used it: {', '.join(chain['models']) or '-'}")
    for name, a in chain["accuracy"].items():
        lines.append(f"  {name}: {a['correct']}/{a['n']} right on {a['split']}")
    return "\n".join(lines)


def format_model(chain: dict) -> str:
    chain = _escaped(chain)
    s = chain["settings"]
    lines = [
        f"model {chain['model']}: arch {s.get('arch')}, lr {s.get('lr')}, {s.get('epochs')} epochs, "
        f"trained on {chain['device'] or '?'}",
        f"dataset {chain['dataset']}: {chain['training_images']} training images; by label / split:",
    ]
    lines += _counts(chain["images_by_label_and_split"])
    if chain["backbone"]:
        pretrained = f", pre-trained on dataset {chain['backbone']['dataset']}" if chain["backbone"]["dataset"] else ""
        lines.append(f"backbone: {chain['backbone']['name']}{pretrained}")
    lines.append("its images' records by source / licence:")
    lines += _counts(chain["records_by_source_and_license"])
    lines.append(f"rights holders: {', '.join(chain['rights_holders']) or '-'}")
    m = chain["metrics"]
    if m.get("n") is not None:
        lines.append(f"accuracy on {m['evaluated_on']}: {m['accuracy']:.3f} ({m['correct']}/{m['n']})")
    lines.append(f"predictions: {chain['predictions']}, of which wrong: {len(chain['mistakes'])}")
    shown = chain["mistakes"][:MISTAKES_SHOWN]
    lines += [f"  {w['sha256']} ({w['split']}): {w['predicted']!r} for {w['label']!r}" for w in shown]
    if len(chain["mistakes"]) > len(shown):
        lines.append(f"  ... and {len(chain['mistakes']) - len(shown)} more (--json lists them all)")
    return "\n".join(lines)


def report(prov: Provenance, query: str) -> str:
    kind, chain = audit(prov, query)
    return {"image": format_image, "species": format_species, "model": format_model}[kind](chain)
