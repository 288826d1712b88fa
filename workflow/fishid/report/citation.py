"""How to cite the data the datasets use: `results/provenance/citation.md` and `derived_dataset.tsv`.

GBIF asks that a download be cited by its DOI ("GBIF.org (date) GBIF Occurrence Download
https://doi.org/..."); data that came without one (the search API, an archive by path)
is cited by registering a derived dataset, a form that asks for the datasetKey of every
GBIF dataset used and how many of its records were: `derived_dataset.tsv` holds those rows,
counted over the images in a final dataset only. Every other source is cited as its terms
ask (FishBase, FishPix), or with what the configuration says of it (folder, synthetic).

Every field from a server or a table (rights holders, dates, keys) is written as plain
text: markdown's markup in it is escaped, so it cannot make a link, an image or HTML.
"""

import logging
import re
from datetime import date

import pandas as pd

from fishid import steps
from fishid.config import kind_of
from fishid.report.attribution import neutralise, stored_records, used_images
from fishid.sources.base import day_of
from fishid.sources.gbif import REGISTER_URL
from fishid.sources.kinds import kind

log = logging.getLogger(__name__)

DERIVED_COLUMNS = ["datasetKey", "count"]
RIGHTS_HOLDERS_SHOWN = 10
# Inline markup of CommonMark and GitHub's markdown; line-start markup cannot occur, since
# every value is put on one line after text of ours.
_MARKUP = re.compile(r"([\\`*_\[\]<>&|~!])")


def plain(value) -> str:
    """`value` as markdown text that shows as written: markup escaped, on one line."""
    return _MARKUP.sub(r"\\\1", " ".join(str(value).split()))


def used_records(records: pd.DataFrame, downloads: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Every source record behind an image that a final dataset uses."""
    return stored_records(records, downloads).merge(used_images(splits)[["sha256"]], on="sha256")


def derived_dataset(used: pd.DataFrame, kinds: dict) -> pd.DataFrame:
    """The derived-dataset form's rows: per GBIF datasetKey, the images of it a dataset uses
    (an image whose records came from two datasets counts for both). `kinds`: each source's kind."""
    gbif_sources = {source for source, name in kinds.items() if kind(name).gbif_datasets}
    gbif = used[used["source"].isin(gbif_sources) & (used["dataset_key"] != "")]
    counts = gbif.groupby("dataset_key")["sha256"].nunique()
    table = pd.DataFrame({"datasetKey": counts.index, "count": counts.values}, columns=DERIVED_COLUMNS)
    table = table.sort_values(["count", "datasetKey"], ascending=[False, True], ignore_index=True)
    return table.map(neutralise)


def source_citation(kind_name: str, spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    """(citation, note) of one source, as its terms ask (its kind's `cite`); ValueError for an unknown kind."""
    return kind(kind_name).cite(spec, facts, listed)


def citations(sources: dict, facts: dict, used: pd.DataFrame) -> list[dict]:
    """One entry per configured source: its citation, a note, its images in the datasets and
    their most frequent rights holders; plain text."""
    entries = []
    for name, spec in sources.items():
        mine = used[used["source"] == name]
        listed = max((d for d in map(day_of, mine["listed_at"]) if d), default=date.today())
        text, note = source_citation(kind_of(name, spec), spec, facts.get(name, {}), listed)
        holders = mine[mine["rights_holder"] != ""].groupby("rights_holder")["sha256"].nunique()
        holders = holders.sort_values(ascending=False, kind="stable")
        entries.append(
            {
                "source": name,
                "kind": kind_of(name, spec),
                "images": int(mine["sha256"].nunique()),
                "citation": text,
                "note": note,
                "rights_holders": [(h, int(n)) for h, n in holders.head(RIGHTS_HOLDERS_SHOWN).items()],
                "more_rights_holders": max(0, len(holders) - RIGHTS_HOLDERS_SHOWN),
            }
        )
    return entries


def view(sources: dict, records: pd.DataFrame, downloads: pd.DataFrame, splits: pd.DataFrame) -> dict:
    """What the report's provenance section shows, as plain text: the images the datasets
    use, the citations (one per source), the derived-dataset rows and the form's address."""
    used = used_records(records, downloads, splits)
    kinds = {name: kind_of(name, spec) for name, spec in sources.items()}
    facts = {
        name: kind(kinds[name]).download_facts(name, spec)
        for name, spec in sources.items()
        if kind(kinds[name]).download_facts
    }
    derived = derived_dataset(used, kinds)
    return {
        "images": int(used["sha256"].nunique()),
        "citations": citations(sources, facts, used),
        "derived_dataset": derived.to_dict("records"),
        "register_url": REGISTER_URL,
    }


def markdown(shown: dict) -> str:
    """citation.md: the view as markdown."""
    lines = ["# How to cite the data", ""]
    used = [entry for entry in shown["citations"] if entry["images"]]
    lines += [
        f"The final datasets use {shown['images']} image(s) from {len(used)} source(s). "
        "Cite each source below; attribution.csv names every image's rights holder, which licences such as "
        "CC BY require wherever the images are published.",
        "",
    ]
    for entry in used:
        lines += [f"## {plain(entry['source'])} ({plain(entry['kind'])}, {entry['images']} image(s))", ""]
        lines += [plain(entry["citation"]), ""]
        if entry["note"]:
            lines += [f"Note: {plain(entry['note'])}", ""]
        if entry["rights_holders"]:
            lines += ["Rights holders (images):", ""]
            lines += [f"- {plain(holder)} ({count})" for holder, count in entry["rights_holders"]]
            if entry["more_rights_holders"]:
                lines.append(f"- and {entry['more_rights_holders']} more (attribution.csv)")
            lines.append("")
    rows = shown["derived_dataset"]
    if rows:
        lines += [
            "## GBIF datasets used",
            "",
            f"The images came from {len(rows)} GBIF dataset(s): derived_dataset.tsv counts them by datasetKey, "
            f"the rows GBIF's derived-dataset form ({REGISTER_URL}) asks for.",
            "",
        ]
    unused = [plain(entry["source"]) for entry in shown["citations"] if not entry["images"]]
    if unused:
        lines += [f"Configured, but no image of theirs is in a final dataset: {', '.join(unused)}.", ""]
    return "\n".join(lines)


@steps.declare(
    "citation",
    "how to cite the data the datasets use",
    steps.par("spec", key="sources", type="json", help="the configuration's sources as JSON"),
    steps.inp("records", nargs="+"),
    steps.inp("downloads", nargs="+"),
    steps.inp("splits", nargs="+"),
    steps.out("out", key="citation"),
    steps.out("derived", help="derived_dataset.tsv: images per GBIF datasetKey"),
)
def citation_step(spec, records, downloads, splits, out, derived):
    """The `citation` step (rule citation): the page to cite (`out`) and the derived-dataset rows."""
    from fishid.tables import read_table, write_table, write_text_atomic

    def tables(paths):
        return pd.concat([read_table(p) for p in paths], ignore_index=True)

    shown = view(spec, tables(records), tables(downloads), tables(splits))
    write_text_atomic(out, markdown(shown))
    write_table(pd.DataFrame(shown["derived_dataset"], columns=DERIVED_COLUMNS), derived)
    log.info("%d source(s), %d GBIF dataset(s)", len(shown["citations"]), len(shown["derived_dataset"]))
