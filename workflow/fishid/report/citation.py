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

import re
from datetime import date

import pandas as pd

from fishid.report.attribution import neutralise, stored_records, used_images
from fishid.sources import gbif_request

GBIF_KINDS = ("gbif", "gbif_download")
REGISTER_URL = "https://www.gbif.org/derived-dataset/register"
DERIVED_COLUMNS = ["datasetKey", "count"]
FISHPIX_URL = "https://fishpix.kahaku.go.jp/"
# Who runs FishPix (its photo numbers are the Kanagawa museum's KPM-NR); a source's rights_holder overrides it.
FISHPIX_HOLDERS = "Kanagawa Prefectural Museum of Natural History and National Museum of Nature and Science"
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
    (an image whose records came from two datasets counts for both)."""
    gbif = used[used["source"].map(kinds).isin(GBIF_KINDS) & (used["dataset_key"] != "")]
    counts = gbif.groupby("dataset_key")["sha256"].nunique()
    table = pd.DataFrame({"datasetKey": counts.index, "count": counts.values}, columns=DERIVED_COLUMNS)
    table = table.sort_values(["count", "datasetKey"], ascending=[False, True], ignore_index=True)
    return table.map(neutralise)


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def _gbif_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def _gbif_download(facts: dict, listed: date) -> tuple[str, str]:
    """(citation, note) of a gbif_download source from what is recorded of its download."""
    when = _gbif_date(_day(facts.get("created", "")) or listed)
    if facts.get("doi"):
        return f"GBIF.org ({when}) GBIF Occurrence Download https://doi.org/{facts['doi']}", ""
    if facts.get("key"):
        page = f"https://www.gbif.org/occurrence/download/{facts['key']}"
        return (
            f"GBIF.org ({when}) GBIF Occurrence Download {facts['key']} ({page})",
            f"no DOI is recorded for it: cite the DOI its page ({page}) shows",
        )
    return _unregistered(listed)


def _unregistered(listed: date) -> tuple[str, str]:
    return (
        f"GBIF.org ({_gbif_date(listed)}) GBIF Occurrence Data",
        f"this data has no DOI: register a derived dataset at {REGISTER_URL} with derived_dataset.tsv "
        "(the datasets and counts the form asks for) and cite the DOI it gives",
    )


def _config_says(spec: dict) -> str:
    """What the source's configuration says of the photos' rights ("" for nothing)."""
    parts = [f"{label} {spec[key]}" for key, label in (("rights_holder", "©"), ("creator", "by")) if spec.get(key)]
    if spec.get("licence"):
        parts.append(f"licence {spec['licence']}")
    return ", ".join(parts)


def _config_note(spec: dict) -> str:
    return f"the configuration says: {_config_says(spec)}" if _config_says(spec) else ""


def source_citation(kind: str, spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    """(citation, note) of one source, as its terms ask."""
    if kind == "gbif_download":
        return _gbif_download(facts, listed)
    if kind == "gbif":
        return _unregistered(listed)
    if kind == "fishbase":
        return (
            f"Froese, R. and D. Pauly. Editors. {listed.year}. FishBase. World Wide Web electronic publication. "
            f"www.fishbase.org, version ({listed:%m/%Y}).",
            _config_note(spec),
        )
    if kind == "fishpix":
        return (
            f"FishPix, image database of fishes, {spec.get('rights_holder') or FISHPIX_HOLDERS}, Japan. "
            f"{spec.get('base_url', FISHPIX_URL)} (accessed {listed.isoformat()}).",
            _config_note(spec),
        )
    if kind == "folder":
        rights = _config_says(spec) or "the configuration names no rights holder or licence"
        return f"Photos from {spec['path']}: {rights}.", ""
    if kind == "synthetic":
        return f"Synthetic photos rendered by fishid from {spec.get('patterns', '')} (CC0-1.0).", ""
    # A kind added to fishid.sources.base.ADAPTERS without its citation must not pass as synthetic.
    raise ValueError(f"no citation for source kind {kind!r}: add it to fishid.report.citation.source_citation")


def citations(sources: dict, facts: dict, used: pd.DataFrame) -> list[dict]:
    """One entry per configured source: its citation, a note, its images in the datasets and
    their most frequent rights holders; plain text."""
    entries = []
    for name, spec in sources.items():
        mine = used[used["source"] == name]
        listed = max((d for d in map(_day, mine["listed_at"]) if d), default=date.today())
        text, note = source_citation(spec.get("kind", name), spec, facts.get(name, {}), listed)
        holders = mine[mine["rights_holder"] != ""].groupby("rights_holder")["sha256"].nunique()
        holders = holders.sort_values(ascending=False, kind="stable")
        entries.append(
            {
                "source": name,
                "kind": spec.get("kind", name),
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
    facts = {
        name: gbif_request.download_of(name, spec)
        for name, spec in sources.items()
        if spec.get("kind", name) == "gbif_download"
    }
    kinds = {name: spec.get("kind", name) for name, spec in sources.items()}
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
