"""GBIF: occurrence photos found through the GBIF API with pygbif, GBIF's own Python client.

Each configured name is matched against the GBIF name backbone first: a synonym maps to
its accepted name, whose key the occurrence search then uses, so photos filed under
any synonym come too. Each record keeps both names: `taxon` (accepted) and
`source_taxon` (as the occurrence was filed). One record per still image of an
occurrence; photos of one occurrence share `occurrence_id` (`gbif:<gbifID>`).
"""

from __future__ import annotations

import logging
import sys
from datetime import date

from tqdm import tqdm

from fishid import licences
from fishid.config import default
from fishid.sources.base import Context, Listing, SourceKind
from fishid.sources.gbif_api import api_root, asking, canonical
from fishid.tables import HIGHER_RANKS, RANKS

log = logging.getLogger(__name__)

# The search API's window: offset + limit may not pass this (GBIF reports 200,000; plan for less).
SEARCH_WINDOW = 100_000


def resolve(name: str, match: dict) -> dict:
    """The accepted usage a backbone match answer (v2 `species/match` shape) gives for `name`."""
    usage = match.get("usage") or {}
    match_type = (match.get("diagnostics") or {}).get("matchType", "")
    if not usage or match_type in ("NONE", ""):
        raise ValueError(f"gbif: name {name!r} has no match in the GBIF name backbone; check its spelling")
    accepted = match.get("acceptedUsage") or usage
    # A binomial is a species; one word names a genus, a family or any rank above (a class, a thesis's order).
    binomial = len(name.split()) >= 2
    wanted = {"SPECIES"} if binomial else {r.upper() for r in HIGHER_RANKS}
    rank = str(accepted.get("rank") or ("SPECIES" if binomial else "GENUS")).upper()
    if match_type == "HIGHERRANK" or rank not in wanted:
        raise ValueError(
            f"gbif: name {name!r} matched only {accepted.get('name')!r} ({accepted.get('rank')}) in the GBIF backbone;"
            " check its spelling"
        )
    if match_type == "FUZZY":
        log.warning("gbif: %r matched fuzzily to %r", name, usage.get("name"))
    resolved = {
        "name": name,
        "key": accepted["key"],
        "accepted": accepted.get("canonicalName") or canonical(accepted.get("name", "")),
        "rank": rank,
        "synonym": bool(match.get("synonym")),
    }
    if resolved["synonym"]:
        log.info("gbif: %r is a synonym of %r; searching the accepted name", name, resolved["accepted"])
    return resolved


def _text(value) -> str:
    """A field as text: a search answer may hold a number, a list or null where a string belongs."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else ""


def occurrence_ranks(occurrence: dict) -> dict:
    """The classification GBIF gave an occurrence (a search answer, or a Darwin Core archive's
    row: the same field names), a rank GBIF left out empty, and the key of its accepted name."""
    ranks = {rank: _text(occurrence.get(rank)) for rank in RANKS}
    key = _text(occurrence.get("acceptedTaxonKey"))
    # taxonKey is the name as filed: the accepted name's key only when that name is not a synonym.
    if not key and _text(occurrence.get("taxonomicStatus")).upper() in ("", "ACCEPTED"):
        key = _text(occurrence.get("taxonKey"))
    return ranks | {"taxon_key": key}


def occurrence_records(occurrence: dict, query: dict, position: int = 0) -> tuple[list[dict], list[str]]:
    """One record per still image of an occurrence (search-API shape), and what was left out
    of it and why, naming the record (`position`: its place in the search's answers, for one
    that has no key)."""
    if not isinstance(occurrence, dict):
        return [], [f"search result {position} is a {type(occurrence).__name__}, not an occurrence; skipped"]
    gbif_id = _text(occurrence.get("gbifID")) or _text(occurrence.get("key"))
    if not gbif_id:
        return [], [f"search result {position} has no key (gbifID); skipped"]
    problems = []
    taxon = occurrence.get("species") or ""
    if not isinstance(taxon, str):
        problems.append(f"gbif:{gbif_id}: species is a {type(taxon).__name__}, not a name; filed as the query's")
        taxon = ""
    if not taxon:
        accepted = _text(occurrence.get("acceptedScientificName"))
        taxon = query["accepted"] if query["rank"] == "SPECIES" else canonical(accepted)
    media_items = occurrence.get("media") or []
    if isinstance(media_items, dict):  # one media object where GBIF sends a list of them
        media_items = [media_items]
    if not isinstance(media_items, list):
        problems.append(f"gbif:{gbif_id}: media is a {type(media_items).__name__}, not a list; skipped")
        media_items = []
    records = []
    for n, media in enumerate(media_items, start=1):
        if not isinstance(media, dict):
            problems.append(f"gbif:{gbif_id}-{n}: media item is a {type(media).__name__}, not an object; skipped")
            continue
        if media.get("type") != "StillImage" or not media.get("identifier"):
            continue
        if not isinstance(media["identifier"], str):
            problems.append(f"gbif:{gbif_id}-{n}: identifier is a {type(media['identifier']).__name__}; skipped")
            continue
        raw_licence = _text(media.get("license")) or _text(occurrence.get("license"))
        records.append(
            {
                "record_id": f"gbif:{gbif_id}-{n}",
                "taxon": taxon or query["accepted"],
                "source_taxon": _text(occurrence.get("scientificName")) or query["name"],
                **occurrence_ranks(occurrence),
                "media_url": media["identifier"],
                "page_url": _text(media.get("references")) or f"https://www.gbif.org/occurrence/{gbif_id}",
                "license": licences.normalise(raw_licence) or raw_licence,
                "rights_holder": _text(media.get("rightsHolder")) or _text(occurrence.get("rightsHolder")),
                "creator": _text(media.get("creator")) or _text(occurrence.get("recordedBy")),
                "occurrence_id": f"gbif:{gbif_id}",
                "basis_of_record": _text(occurrence.get("basisOfRecord")),
                "preparations": _text(occurrence.get("preparations")),
                "dataset_key": _text(occurrence.get("datasetKey")),
            }
        )
    return records, problems


def list_records(spec: dict, context: Context) -> Listing:
    from pygbif import occurrences, species

    settings = context.client.settings
    timeout = (settings.connect_timeout, settings.read_timeout)
    checklist = {"checklistKey": spec["checklist_key"]} if spec.get("checklist_key") else {}
    page_size = int(spec.get("page_size", 300))
    max_records = int(spec.get("max_records", SEARCH_WINDOW))
    records, notes, problems, seen = [], {}, [], set()
    with api_root(spec.get("api", default("api", definition="source_gbif")), context.client):
        for name in spec["names"]:

            def match(name=name):
                return species.name_backbone(scientificName=name, strict=True, timeout=timeout, **checklist)

            query = resolve(name, asking(context.client, match, f"gbif: matching {name!r}"))
            found = 0
            answers = _search(occurrences, query, spec, page_size, max_records, context.client, timeout, checklist)
            for position, occurrence in enumerate(answers, start=1):
                listed, left_out = occurrence_records(occurrence, query, position)
                problems += [(query["accepted"], f"{name!r}: {problem}") for problem in left_out]
                for record in listed:
                    if record["record_id"] not in seen:
                        seen.add(record["record_id"])
                        records.append(record)
                        found += 1
            if not found:
                notes[query["accepted"]] = f"no occurrence with a still image for {name!r} (key {query['key']})"
    return Listing(records, notes, problems)


def _search(occurrences, query, spec, page_size, max_records, client, timeout, checklist):
    filters = {"basisOfRecord": spec["basis_of_record"]} if spec.get("basis_of_record") else {}
    offset, bar = 0, None
    try:
        while True:

            def page_at(offset=offset):
                return occurrences.search(
                    taxonKey=query["key"],
                    mediatype="StillImage",
                    limit=page_size,
                    offset=offset,
                    timeout=timeout,
                    **checklist,
                    **filters,
                )

            page = asking(client, page_at, f"gbif: occurrence search for {query['accepted']!r}")
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                shape = f"keys: {sorted(map(str, page))}" if isinstance(page, dict) else type(page).__name__
                raise ValueError(f"gbif: the occurrence search answered without a list of 'results' ({shape})")
            if offset == 0:
                count = int(page.get("count") or 0)
                if count > max_records:
                    raise ValueError(
                        f"gbif: {query['accepted']!r} has {count} occurrences with images, more than max_records "
                        f"({max_records}) that the search API can page through; use a gbif_download source "
                        "(a GBIF download of the taxon) instead"
                    )
                bar = tqdm(total=count, desc=f"gbif {query['accepted']}", unit="occ", file=sys.stderr)
            yield from page["results"]
            bar.update(len(page["results"]))
            offset += len(page["results"])
            if page.get("endOfRecords", True) or not page["results"]:
                return
    finally:
        if bar is not None:
            bar.close()


REGISTER_URL = "https://www.gbif.org/derived-dataset/register"


def gbif_date(day: date) -> str:
    """A day as GBIF's citations write it (2 January 2026)."""
    return f"{day.day} {day:%B %Y}"


def unregistered(listed: date) -> tuple[str, str]:
    """(citation, note) of GBIF data that came without a DOI: a derived dataset must be registered."""
    return (
        f"GBIF.org ({gbif_date(listed)}) GBIF Occurrence Data",
        f"this data has no DOI: register a derived dataset at {REGISTER_URL} with derived_dataset.tsv "
        "(the datasets and counts the form asks for) and cite the DOI it gives",
    )


def cite(spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    """The search API's data has no DOI."""
    return unregistered(listed)


KIND = SourceKind("gbif", list_records, cite, title="GBIF", network=True, gbif_datasets=True)
