"""The review app's pages as data: plain tables and dicts built from the run's tables
(fishid.report.audit.Provenance), which the templates only lay out."""

import json
import math
import threading
from pathlib import Path

import pandas as pd

from fishid.config import explicit_species
from fishid.report.attribution import stored_records
from fishid.review import embedding_map
from fishid.review.files import image_url
from fishid.review.label_issues import ISSUE_COLUMNS
from fishid.tables import read_if_there, read_table

PAGE_SIZE = 200  # thumbnails per page: a browser stays quick, the page links reach the rest
SCORES_SHOWN = 5  # a mistake's highest scores on the model's page
LABEL_ISSUES = "results/review/label_issues.tsv"
LABEL_ISSUES_SUMMARY = "results/review/label_issues.json"
FILTERS = ("species", "source", "license", "role", "status", "reason")
# The Dataset view's export: what identifies a photo, what cleaning made of it, where it is
# used and the decision about it not applied yet.
EXPORT_COLUMNS = [
    "sha256",
    "species",
    "taxon",
    "listed_as",
    "kept",
    "reason",
    "source",
    "license",
    "rights_holder",
    "roles",
    "path",
    "derived_path",
    "pending_decision",
    "pending_label",
    "pending_reason",
]


class Cache:
    """Values made from files, each kept while its key (fishid.report.audit.signature: the
    files' paths, times, sizes) stays the same: a page reads the run's tables once, not once a
    request, and again as soon as a running Snakemake writes one. Made under a lock: requests
    at once wait for one reading instead of each reading. The values are shared between
    requests: callers copy, never change them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = {}

    def get(self, name: str, key, make):
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[0] != key:
                entry = (key, make())
                self._entries[name] = entry
            return entry[1]


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
    roles in the datasets ("pair:train, trio_other:val") and the thumbnail to show. Looked up
    by column (map), not row by row: row by row took 6 s at 20,000 photos."""
    if not len(prov.clean):
        return pd.DataFrame(columns=["sha256", "taxon", "source", "license", "roles", "kept", "reason", "url"])
    linked = stored_records(prov.records, prov.downloads).sort_values(["sha256", "record_id"])
    first = linked.drop_duplicates("sha256").set_index("sha256")
    table = prov.clean.copy()
    for column in ("source", "license", "rights_holder"):
        table[column] = table["sha256"].map(first[column]).fillna("")
    stored = prov.downloads[prov.downloads["sha256"] != ""].drop_duplicates("sha256").set_index("sha256")["path"]
    table["path"] = table["sha256"].map(stored).fillna("")
    splits = prov.splits.sort_values(["dataset"], kind="stable")
    roles = {}
    for sha, role in zip(splits["sha256"], splits["dataset"] + ":" + splits["split"], strict=True):
        roles.setdefault(sha, []).append(role)
    table["roles"] = [", ".join(roles.get(sha, ())) for sha in table["sha256"]]
    table["species"] = table["taxon"].where(table["taxon"] != "", table["listed_as"])
    table["reason_kind"] = table["reason"].map(reason_kind)
    derived = table["derived_path"] if "derived_path" in table else [""] * len(table)
    table["url"] = [thumbnail({"derived_path": d, "path": p}) for d, p in zip(derived, table["path"], strict=True)]
    table["original_url"] = [image_url("store", p) if p else "" for p in table["path"]]
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


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    """The Dataset page's order, which its pages and exports share."""
    return table.sort_values(["species", "roles", "sha256"])


def page_of(table: pd.DataFrame, page: int, size: int | None = None) -> tuple[pd.DataFrame, int, int]:
    """(the rows of page `page`, counted from 1 and clamped into range, that page, the number of pages)."""
    size = size or PAGE_SIZE
    pages = max(1, math.ceil(len(table) / size))
    page = min(max(page, 1), pages)
    return ordered(table).iloc[(page - 1) * size : page * size], page, pages


def grouped(table: pd.DataFrame) -> list[dict]:
    """Species, then split roles, each with its images."""
    groups = []
    for species, of_species in ordered(table).groupby("species", sort=True):
        parts = [
            {"roles": roles or "in no dataset", "images": rows.to_dict("records")}
            for roles, rows in of_species.groupby("roles", sort=True)
        ]
        groups.append({"species": species or "(no single label)", "parts": parts})
    return groups


def label_issues(root) -> pd.DataFrame:
    path = Path(root, LABEL_ISSUES)
    return read_if_there(lambda p: read_table(p, ISSUE_COLUMNS), path, pd.DataFrame(columns=ISSUE_COLUMNS))


def issue_summary(root) -> dict:
    """Rule label_issues' summary (counts of flags, outliers, clusters), {} before it ran."""
    path = Path(root, LABEL_ISSUES_SUMMARY)
    return read_if_there(lambda p: json.loads(p.read_text()), path, {})


def joined(by_sha: pd.DataFrame, issues: pd.DataFrame) -> list[dict]:
    """Each label-issue row over its photo's row of the images table (indexed by sha256)."""
    return [
        {**by_sha.loc[r["sha256"]].to_dict(), **r} for r in issues.to_dict("records") if r["sha256"] in by_sha.index
    ]


def queue_items(table: pd.DataFrame, issues: pd.DataFrame, scope: str) -> pd.DataFrame:
    """The label-issue queue to work through, least self-confident first: the flagged photos,
    or with scope "all" every ranked one, of those the images table holds (queue_item joins
    one to its cleaning row: joining all of them took seconds a page at 20,000 photos)."""
    chosen = issues if scope == "all" else issues[issues["flagged"] == "True"]
    chosen = chosen[chosen["sha256"].isin(set(table["sha256"]))]
    return chosen.sort_values("rank", key=lambda r: r.astype(int))


def queue_item(table: pd.DataFrame, items: pd.DataFrame, at: int) -> dict | None:
    """The queue's photo at position `at` (from 0) over its cleaning row; None past the end."""
    if not 0 <= at < len(items):
        return None
    one = items.iloc[[at]]
    return joined(table[table["sha256"].isin(set(one["sha256"]))].set_index("sha256"), one)[0]


def issue_of(issues: pd.DataFrame, sha256: str) -> dict:
    rows = issues[issues["sha256"] == sha256].to_dict("records")
    return rows[0] if rows else {}


def relabel_default(issue: dict, row: dict) -> str:
    """The relabel menu's first choice: the queue's suggested label where it differs from the
    photo's, else the photo's own."""
    suggested = issue.get("predicted", "")
    return suggested if suggested and suggested != row.get("taxon") else row.get("taxon", "")


def with_pending(table: pd.DataFrame, found: list[dict]) -> pd.DataFrame:
    """The table with the pending decision of each photo (fishid.review.decisions.pending)."""
    table = table.copy()
    by_sha = {d["id"]: d for d in found}
    decided = [by_sha.get(sha, {}) for sha in table["sha256"]]
    table["pending_decision"] = [d.get("kind", "") for d in decided]
    table["pending_label"] = [d.get("label", "") for d in decided]
    table["pending_reason"] = [d.get("reason", "") for d in decided]
    return table


def export_table(table: pd.DataFrame, found: list[dict]) -> pd.DataFrame:
    return with_pending(ordered(table), found).reindex(columns=EXPORT_COLUMNS).fillna("")


def queues(table: pd.DataFrame, issues: pd.DataFrame, top: int = 50) -> dict:
    """What to look at, most suspicious first in each queue."""
    by_sha = table.set_index("sha256")
    flagged = issues[issues["flagged"] == "True"].head(top)
    likely = joined(by_sha, flagged)
    clustered = table[table["near_duplicate_cluster"] != ""]
    sizes = clustered.groupby("near_duplicate_cluster").size().sort_values(ascending=False)
    clusters = [
        clustered[clustered["near_duplicate_cluster"] == name].sort_values("kept", ascending=False).to_dict("records")
        for name in sizes.index[:top]
    ]
    outliers = issues[issues["is_outlier"] == "True"]
    return {
        "likely_label_errors": likely,
        "outliers": joined(by_sha, outliers.sort_values("outlier_score", key=lambda s: s.astype(float)).head(top)),
        "label_conflicts": table[table["reason_kind"].str.startswith("label conflict")].head(top).to_dict("records"),
        "near_duplicates": clusters,
        "non_photos": table[table["reason_kind"] == "not a photo"].head(top).to_dict("records"),
    }


def model_mistakes(prov, name: str, table: pd.DataFrame, page: int = 1) -> tuple[list[dict], int, int, int]:
    """The model's mistakes on the split its numbers come from, PAGE_SIZE a page: (the rows of
    page `page`, counted from 1 and clamped into range, that page, the number of pages, the
    number of mistakes). Each with its SCORES_SHOWN highest scores, highest first
    (predictions.tsv holds every class's: at 200 classes, every score of every mistake made
    a page of hundreds of thousands of lines)."""
    evaluated_on = prov.models[name].get("metrics", {}).get("evaluated_on", "test")
    rows = prov.predictions
    if not len(rows):
        return [], 1, 1, 0
    rows = rows[(rows["model"] == name) & (rows["split"] == evaluated_on) & (rows["label"] != rows["predicted"])]
    total, pages = len(rows), max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = rows.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    urls = dict(zip(table["sha256"], table["url"]))
    scores = [c for c in rows.columns if c.startswith("score:")]
    # Missing (a model without an "other" class leaves its column empty or NaN) and infinite
    # scores are not shown.
    values = rows[scores].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float) if scores else None
    out = []
    for i, r in enumerate(rows[["sha256", "label", "predicted"]].to_dict("records")):
        shown = {}
        if values is not None:
            row = values[i]
            # Highest first, ties in the table's column order (NaN sorts last).
            finite = [j for j in (-row).argsort(kind="stable") if math.isfinite(row[j])]
            shown = {scores[j].removeprefix("score:"): float(row[j]) for j in finite[:SCORES_SHOWN]}
        out.append({**r, "url": urls.get(r["sha256"], ""), "scores": shown})
    return out, page, pages, total


def _number(text: str) -> bool:
    """A score to show: models without an "other" class leave its column empty or NaN."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def score_text(value) -> str:
    """A score as the pages show it: three decimals, nothing for a missing one (never "nan")."""
    return f"{float(value):.3f}" if _number(str(value)) else ""


def embedding_map_of(root, name: str) -> dict | None:
    """The model's map as rule embedding_map wrote it, laid out for the page; None before the rule ran."""
    path = Path(root, embedding_map.path_of(name))
    drawn = read_if_there(lambda p: json.loads(p.read_text()), path)
    return embedding_map.laid_out(drawn) if drawn is not None else None


def species_of_config(config: dict, table: pd.DataFrame) -> list[str]:
    """Species a photo may be relabelled to: every dataset's species and "other" pools, and
    what cleaning labelled (which holds every species a rule can choose)."""
    names = set(table["taxon"]) - {""}
    for dataset in config.get("datasets", {}).values():
        names |= set(explicit_species(dataset) or []) | set(explicit_species(dataset.get("other", {})) or [])
    return sorted(names)


def as_json(value) -> str:
    return json.dumps(value, default=str)
