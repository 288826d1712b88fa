"""FishBase: species photo pages, read with requests (through the polite client) + BeautifulSoup.

The genus name list gives the species; each species' photo page gives its full-size
photos (thumbnails are skipped) and their photographers. The site's base URL is in the
config, since FishBase has several mirrors (fishbase.se, .de, .org). What the adapter
expects of the pages is all in PAGES and SELECTORS below: when the site changes, that
is the one place to fix, and the error names the URL and the selector that failed.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import date
from pathlib import PurePosixPath
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

from bs4 import BeautifulSoup
from tqdm import tqdm

from fishid.config import default
from fishid.sources.base import Context, Listing, SourceKind, config_note
from fishid.web import FetchFailure

log = logging.getLogger(__name__)

PAGES = {
    "genus": "Nomenclature/ValidNameList.php?{query}",
    "photos": "photos/thumbnailssummary.php?{query}",
}
SELECTORS = {
    # On the genus name list: links to the species' summary pages.
    "species_link": "a[href*='SpeciesSummary']",
    # On a photo page: every picture; full-size ones are under images/species/, thumbnails say 'thumb'.
    "picture": "img[src]",
    "full_size": re.compile(r"images/species/", re.IGNORECASE),
    "thumbnail": re.compile(r"thumb", re.IGNORECASE),
    # The photographer's link follows the photo it credits.
    "photographer": re.compile(r"Collaborator", re.IGNORECASE),
}
BINOMIAL = re.compile(r"\b([A-Z][a-z]+) ([a-z-]{3,})\b")


class PageStructureError(ValueError):
    pass


def page_url(base: str, page: str, **query) -> str:
    return urljoin(base.rstrip("/") + "/", PAGES[page].format(query=urlencode(query)))


def _soup(context: Context, url: str) -> BeautifulSoup:
    try:
        response = context.client.get(url)
    except FetchFailure as failure:
        raise ValueError(f"fishbase: could not read {url}: {failure}") from None
    return BeautifulSoup(response.content, "html.parser")


def genus_species(soup: BeautifulSoup, genus: str, url: str) -> list[str]:
    """Valid species names of `genus` on its name-list page, in page order."""
    names = []
    for link in soup.select(SELECTORS["species_link"]):
        query = parse_qs(urlparse(link["href"]).query)
        if "genusname" in query and "speciesname" in query:
            name = f"{query['genusname'][0]} {query['speciesname'][0]}"
        else:
            found = BINOMIAL.search(link.get_text(" ", strip=True))
            name = f"{found[1]} {found[2]}" if found else ""
        if name.split(" ")[0] == genus and name not in names:
            names.append(name)
    if not names:
        raise PageStructureError(
            f"fishbase: {url}: no species link (selector {SELECTORS['species_link']!r}) for genus {genus!r}; "
            "the genus is misspelt or the page has changed (update fishbase.SELECTORS)"
        )
    return names


def species_photos(soup: BeautifulSoup, taxon: str, url: str) -> list[dict]:
    """Full-size photos on a species photo page, each with its photographer when credited."""
    genus, epithet = taxon.split(" ", 1)
    text = soup.get_text(" ", strip=True)
    if genus not in text or epithet not in text:
        raise PageStructureError(f"fishbase: {url}: the page does not name {taxon!r}; the page has changed")
    photos, thumbnails, current = [], 0, None
    for element in soup.find_all(["img", "a"]):
        if element.name == "img" and element.get("src"):
            src = element["src"]
            if SELECTORS["thumbnail"].search(src):
                thumbnails += 1
            elif SELECTORS["full_size"].search(src):
                media_url = urljoin(url, src)
                current = next((p for p in photos if p["media_url"] == media_url), None)
                if current is None:
                    current = {"media_url": media_url, "creator": ""}
                    photos.append(current)
        elif element.name == "a" and current is not None and not current["creator"]:
            if SELECTORS["photographer"].search(element.get("href", "")):
                current["creator"] = element.get_text(" ", strip=True)
    if thumbnails and not photos:
        raise PageStructureError(
            f"fishbase: {url}: {thumbnails} thumbnail(s) but no full-size photo (src matching "
            f"{SELECTORS['full_size'].pattern!r}); the page has changed (update fishbase.SELECTORS)"
        )
    return photos


def list_records(spec: dict, context: Context) -> Listing:
    base = spec.get("base_url", default("base_url", definition="source_fishbase"))
    taxa = list(spec.get("species", []))
    for genus in spec.get("genera", []):
        url = page_url(base, "genus", syng=genus, crit1="EQUAL", crit2="CONTAINS")
        taxa += [t for t in genus_species(_soup(context, url), genus, url) if t not in taxa]
    records, notes, seen = [], {}, set()
    for taxon in tqdm(taxa, desc="fishbase species", unit="sp", file=sys.stderr):
        genus, epithet = taxon.split(" ", 1)
        url = page_url(base, "photos", Genus=genus, Species=epithet)
        photos = species_photos(_soup(context, url), taxon, url)
        if not photos:
            notes[taxon] = f"no full-size photo on {url}"
        for photo in photos:
            native = PurePosixPath(urlparse(photo["media_url"]).path).stem
            if native in seen:
                # The same photo shown on a second species' page keeps its first listing.
                continue
            seen.add(native)
            records.append(
                {
                    "record_id": f"fishbase:{native}",
                    "taxon": taxon,
                    "source_taxon": taxon,
                    "media_url": photo["media_url"],
                    "page_url": url,
                    "license": spec.get("licence", ""),
                    "rights_holder": photo["creator"],
                    "creator": photo["creator"],
                    "occurrence_id": f"fishbase:{native}",
                    "basis_of_record": "",
                    "dataset_key": f"fishbase:{urlparse(base).netloc}",
                }
            )
    return Listing(records, notes)


def cite(spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    """FishBase's own form of citation, with what the configuration says of the photos' rights."""
    return (
        f"Froese, R. and D. Pauly. Editors. {listed.year}. FishBase. World Wide Web electronic publication. "
        f"www.fishbase.org, version ({listed:%m/%Y}).",
        config_note(spec),
    )


KIND = SourceKind("fishbase", list_records, cite, title="FishBase", network=True)
