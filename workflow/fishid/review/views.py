"""The review app's pages as data: plain tables and dicts built from the run's tables
(fishid.report.audit.Provenance), which the templates only lay out."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fishid.config import explicit_species
from fishid.report.attribution import stored_records
from fishid.review.files import image_url
from fishid.tables import read_table

SHOWN = 400  # thumbnails per page at most: a browser stays quick, filters narrow it down
LABEL_ISSUES = "results/review/label_issues.tsv"


def thumbnail(row) -> str:
    """The derived copy where cleaning made one, else the stored original (dropped images)."""
    if row.get("derived_path"):
        return image_url("results", f"clean/derived/{row['derived_path']}")
    return image_url("store", row.get("path", ""))


def reason_kind(reason: str) -> str:
    """ "not a photo: greyscale" -> "not a photo": the filter's choices."""
    return reason.split(":", 1)[0] if reason else ""


def images(prov) -> pd.DataFrame:
    """One row per cleaned image: its first record's source, licence and rights holder, its
    roles in the datasets ("pair:train, trio_other:val") and the thumbnail to show."""
    if not len(prov.clean):
        return pd.DataFrame(columns=["sha256", "taxon", "source", "license", "roles", "kept", "reason", "url"])
    linked = stored_records(prov.records, prov.downloads).sort_values(["sha256", "record_id"])
    first = linked.drop_duplicates("sha256").set_index("sha256")
    table = prov.clean.copy()
    for column in ("source", "license", "rights_holder"):
        table[column] = [first[column].get(sha, "") for sha in table["sha256"]]
    stored = prov.downloads[prov.downloads["sha256"] != ""].drop_duplicates("sha256").set_index("sha256")["path"]
    table["path"] = [stored.get(sha, "") for sha in table["sha256"]]
    splits = prov.splits.sort_values(["dataset"])
    roles = (splits["dataset"] + ":" + splits["split"]).groupby(splits["sha256"]).agg(", ".join)
    table["roles"] = [roles.get(sha, "") for sha in table["sha256"]]
    table["species"] = table["taxon"].where(table["taxon"] != "", table["listed_as"])
    table["reason_kind"] = table["reason"].map(reason_kind)
    table["url"] = [thumbnail(row) for row in table.to_dict("records")]
    return table


def filter_choices(table: pd.DataFrame, prov) -> dict:
    roles = sorted({role for value in table["roles"] for role in value.split(", ") if role})
    return {
        "species": sorted(set(table["species"]) - {""}),
        "source": sorted(set(table["source"]) - {""}),
        "license": sorted(set(table["license"])),
        "role": roles,
        "status": ["kept", "dropped"],
        "reason": sorted(set(table["reason_kind"]) - {""}),
    }


def filtered(table: pd.DataFrame, query: dict) -> pd.DataFrame:
    """The rows matching every filter given (an empty value is no filter)."""
    keep = pd.Series(True, index=table.index)
    for column in ("species", "source", "license", "reason_kind"):
        value = query.get("reason" if column == "reason_kind" else column, "")
        if value:
            keep &= table[column] == value
    if query.get("role"):
        keep &= table["roles"].str.split(", ").map(lambda roles: query["role"] in roles)
    if query.get("status"):
        keep &= table["kept"].eq("True") == (query["status"] == "kept")
    return table[keep]


def grouped(table: pd.DataFrame) -> list[dict]:
    """Species, then split roles, each with its images (at most SHOWN in all)."""
    groups = []
    shown = table.sort_values(["species", "roles", "sha256"]).head(SHOWN)
    for species, of_species in shown.groupby("species", sort=True):
        parts = [
            {"roles": roles or "in no dataset", "images": rows.to_dict("records")}
            for roles, rows in of_species.groupby("roles", sort=True)
        ]
        groups.append({"species": species or "(no single label)", "parts": parts})
    return groups


def label_issues(root) -> pd.DataFrame:
    path = Path(root, LABEL_ISSUES)
    return read_table(path) if path.exists() else pd.DataFrame(columns=["sha256", "flagged", "rank"])


def queues(table: pd.DataFrame, issues: pd.DataFrame, top: int = 50) -> dict:
    """What to look at, most suspicious first in each queue."""
    by_sha = table.set_index("sha256")
    flagged = issues[issues["flagged"] == "True"].head(top)
    likely = [
        {**by_sha.loc[r["sha256"]].to_dict(), **r} for r in flagged.to_dict("records") if r["sha256"] in by_sha.index
    ]
    clustered = table[table["near_duplicate_cluster"] != ""]
    sizes = clustered.groupby("near_duplicate_cluster").size().sort_values(ascending=False)
    clusters = [
        clustered[clustered["near_duplicate_cluster"] == name].sort_values("kept", ascending=False).to_dict("records")
        for name in sizes.index[:top]
    ]
    return {
        "likely_label_errors": likely,
        "label_conflicts": table[table["reason_kind"].str.startswith("label conflict")].head(top).to_dict("records"),
        "near_duplicates": clusters,
        "non_photos": table[table["reason_kind"] == "not a photo"].head(top).to_dict("records"),
    }


def model_mistakes(prov, name: str, table: pd.DataFrame) -> list[dict]:
    """The model's mistakes on the split its numbers come from, with their scores."""
    evaluated_on = prov.models[name].get("metrics", {}).get("evaluated_on", "test")
    rows = prov.predictions
    if not len(rows):
        return []
    rows = rows[(rows["model"] == name) & (rows["split"] == evaluated_on) & (rows["label"] != rows["predicted"])]
    urls = dict(zip(table["sha256"], table["url"]))
    scores = [c for c in rows.columns if c.startswith("score:")]
    return [
        {
            "sha256": r["sha256"],
            "label": r["label"],
            "predicted": r["predicted"],
            "url": urls.get(r["sha256"], ""),
            "scores": {c.removeprefix("score:"): float(r[c]) for c in scores if r[c] != ""},
        }
        for r in rows.to_dict("records")
    ]


def embedding_points(root, prov, name: str, size: int = 560) -> list[dict]:
    """The 2-D map of the model's embeddings of the evaluated images, scaled to an SVG of
    `size` pixels; [] where the run has none."""
    from fishid.report.figures import embedding_points as project

    path = Path(root, "results/models", name, "figure_data.npz")
    evaluated_on = prov.models[name].get("metrics", {}).get("evaluated_on", "test")
    if not path.exists() or not len(prov.predictions):
        return []
    features = np.load(path)["features"]
    rows = prov.predictions[(prov.predictions["model"] == name) & (prov.predictions["split"] == evaluated_on)]
    if len(rows) != len(features) or len(rows) < 3:
        return []
    xy = project(features.astype(np.float64), "tsne")
    xy = (xy - xy.min(axis=0)) / np.maximum(np.ptp(xy, axis=0), 1e-9) * (size - 40) + 20
    return [
        {"x": float(x), "y": float(y), "sha256": s, "label": label, "predicted": p}
        for (x, y), s, label, p in zip(xy, rows["sha256"], rows["label"], rows["predicted"])
    ]


def species_of_config(config: dict, table: pd.DataFrame) -> list[str]:
    """Species a photo may be relabelled to: every dataset's species and "other" pools, and
    what cleaning labelled (which holds every species a rule can choose)."""
    names = set(table["taxon"]) - {""}
    for dataset in config.get("datasets", {}).values():
        names |= set(explicit_species(dataset) or []) | set(explicit_species(dataset.get("other", {})) or [])
    return sorted(names)


def as_json(value) -> str:
    return json.dumps(value, default=str)
