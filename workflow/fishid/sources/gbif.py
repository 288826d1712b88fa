"""GBIF: occurrence photos found through the GBIF API with pygbif, GBIF's own Python client.

Each configured name is matched against the GBIF name backbone first: a synonym maps to
its accepted name, whose key the occurrence search then uses, so photos filed under
any synonym come too. Each record keeps both names: `taxon` (accepted) and
`source_taxon` (as the occurrence was filed). One record per still image of an
occurrence; photos of one occurrence share `occurrence_id` (`gbif:<gbifID>`).
"""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager

import requests
from tqdm import tqdm

from fishid import licences, web
from fishid.sources.base import Context, Listing

log = logging.getLogger(__name__)

GBIF_ROOT = "https://api.gbif.org/"
# The search API's window: offset + limit may not pass this (GBIF reports 200,000; plan for less).
SEARCH_WINDOW = 100_000
_PYGBIF_ROOTS = ("https://api.gbif.org/", "http://api.gbif.org/")


@contextmanager
def api_root(root: str, timeout=None):
    """Send pygbif's requests to `root` instead of api.gbif.org, and give those it sends
    without a timeout (the download request, a POST) `timeout`, so that a server that never
    answers cannot hold the stage.

    pygbif writes api.gbif.org into its URLs (some through `gbif_baseurl`, some as
    literals), so the origin is swapped where every one of them passes: the requests
    Session. Paths, parameters and parsing stay pygbif's own. Used for a mirror or a
    caching proxy, and by the tests for a loopback server with GBIF-shaped answers.
    """
    root = root.rstrip("/") + "/"
    if root == GBIF_ROOT and timeout is None:
        yield
        return
    original = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        if root != GBIF_ROOT and isinstance(url, str):
            for prefix in _PYGBIF_ROOTS:
                if url.startswith(prefix):
                    url = root + url[len(prefix) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request
    try:
        yield
    finally:
        requests.Session.request = original


def asking(client: web.Client, call, what: str):
    """`call()` (a pygbif request) under the client's retry policy; a listing error when it
    cannot be had."""
    try:
        return client.retry(call, what)
    except web.FetchFailure as failure:
        raise ValueError(f"{what} failed: {failure}") from None


def canonical(name: str) -> str:
    """The name without authorship: `Amphiprion clarkii (Bennett, 1830)` -> `Amphiprion clarkii`.

    A genus stays a genus: `Amphiprion Bloch & Schneider, 1801` -> `Amphiprion`.
    """
    words = (name or "").split()
    if len(words) >= 2 and re.fullmatch(r"[a-z-]+", words[1]) and words[1] not in ("sp.", "spp."):
        return " ".join(words[:2])
    return words[0] if words else ""


def resolve(name: str, match: dict) -> dict:
    """The accepted usage a backbone match answer (v2 `species/match` shape) gives for `name`."""
    usage = match.get("usage") or {}
    match_type = (match.get("diagnostics") or {}).get("matchType", "")
    if not usage or match_type in ("NONE", ""):
        raise ValueError(f"gbif: name {name!r} has no match in the GBIF name backbone; check its spelling")
    accepted = match.get("acceptedUsage") or usage
    wanted_rank = "SPECIES" if len(name.split()) >= 2 else "GENUS"
    if match_type == "HIGHERRANK" or (accepted.get("rank") or wanted_rank).upper() != wanted_rank:
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
        "rank": wanted_rank,
        "synonym": bool(match.get("synonym")),
    }
    if resolved["synonym"]:
        log.info("gbif: %r is a synonym of %r; searching the accepted name", name, resolved["accepted"])
    return resolved


def occurrence_records(occurrence: dict, query: dict) -> list[dict]:
    """One record per still image of an occurrence (search-API shape)."""
    gbif_id = str(occurrence.get("gbifID") or occurrence["key"])
    taxon = occurrence.get("species") or ""
    if not taxon:
        taxon = query["accepted"] if query["rank"] == "SPECIES" else canonical(occurrence.get("acceptedScientificName"))
    records = []
    for n, media in enumerate(occurrence.get("media") or [], start=1):
        if media.get("type") != "StillImage" or not media.get("identifier"):
            continue
        raw_licence = media.get("license") or occurrence.get("license") or ""
        records.append(
            {
                "record_id": f"gbif:{gbif_id}-{n}",
                "taxon": taxon or query["accepted"],
                "source_taxon": occurrence.get("scientificName") or query["name"],
                "media_url": media["identifier"],
                "page_url": media.get("references") or f"https://www.gbif.org/occurrence/{gbif_id}",
                "license": licences.normalise(raw_licence) or raw_licence,
                "rights_holder": media.get("rightsHolder") or occurrence.get("rightsHolder") or "",
                "creator": media.get("creator") or occurrence.get("recordedBy") or "",
                "occurrence_id": f"gbif:{gbif_id}",
                "basis_of_record": occurrence.get("basisOfRecord") or "",
                "preparations": occurrence.get("preparations") or "",
                "dataset_key": occurrence.get("datasetKey") or "",
            }
        )
    return records


def list_records(spec: dict, context: Context) -> Listing:
    from pygbif import occurrences, species

    settings = context.client.settings
    timeout = (settings.connect_timeout, settings.read_timeout)
    checklist = {"checklistKey": spec["checklist_key"]} if spec.get("checklist_key") else {}
    page_size = int(spec.get("page_size", 300))
    max_records = int(spec.get("max_records", SEARCH_WINDOW))
    records, notes, seen = [], {}, set()
    with api_root(spec.get("api", GBIF_ROOT)):
        for name in spec["names"]:

            def match(name=name):
                return species.name_backbone(scientificName=name, strict=True, timeout=timeout, **checklist)

            query = resolve(name, asking(context.client, match, f"gbif: matching {name!r}"))
            found = 0
            for occurrence in _search(
                occurrences, query, spec, page_size, max_records, context.client, timeout, checklist
            ):
                for record in occurrence_records(occurrence, query):
                    if record["record_id"] not in seen:
                        seen.add(record["record_id"])
                        records.append(record)
                        found += 1
            if not found:
                notes[query["accepted"]] = f"no occurrence with a still image for {name!r} (key {query['key']})"
    return Listing(records, notes)


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
            if "results" not in page:
                raise ValueError(f"gbif: the occurrence search answered without 'results' (keys: {sorted(page)})")
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
