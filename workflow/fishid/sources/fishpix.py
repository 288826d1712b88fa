"""FishPix (Kanagawa Prefectural Museum / National Museum of Nature and Science, Tokyo).

The image database shows one photo per detail page, paged by START for a genus. On a
page the species name is the first <b> and the photo the first <img> with a relative
src; "Genus sp." entries name no species and are kept under the genus. The listing
ends at the first page with neither, or when START stops moving (the site repeats its
last photo). What the adapter expects of the pages is all in PAGES and SELECTORS.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import date
from pathlib import PurePosixPath
from urllib.parse import urlencode, urljoin, urlparse

from bs4 import BeautifulSoup
from tqdm import tqdm

from fishid.sources.base import Context, Listing, SourceKind, config_note
from fishid.web import FetchFailure

log = logging.getLogger(__name__)

PAGES = {"detail": "fishimage-e/detail?{query}"}
SELECTORS = {
    "species": "b",  # the first one names the species
    "photo": "img[src]",  # the first one whose src is relative is the photo
    # A table cell holding this label is followed by the photographer's name.
    "photographer_label": re.compile(r"photograph(er|ed by)", re.IGNORECASE),
}
BASE_URL = "https://fishpix.kahaku.go.jp/"
# Who runs FishPix (its photo numbers are the Kanagawa museum's KPM-NR); a source's rights_holder overrides it.
HOLDERS = "Kanagawa Prefectural Museum of Natural History and National Museum of Nature and Science"
NAME = re.compile(r"^([A-Z][a-z]+)\s+([a-z-]+\.?)")


class PageStructureError(ValueError):
    pass


def detail_url(base: str, genus: str, start: int) -> str:
    return urljoin(base.rstrip("/") + "/", PAGES["detail"].format(query=urlencode({"START": start, "SPECIES": genus})))


def parse_detail(html: bytes, url: str) -> dict | None:
    """The photo on a detail page, or None past the last page."""
    soup = BeautifulSoup(html, "html.parser")
    bold = soup.select_one(SELECTORS["species"])
    photo = next((img for img in soup.select(SELECTORS["photo"]) if not urlparse(img["src"]).netloc), None)
    if bold is None and photo is None:
        return None
    if photo is None:
        raise PageStructureError(
            f"fishpix: {url}: a species name but no <img> with a relative src; the page has changed"
        )
    name = NAME.match(bold.get_text(" ", strip=True)) if bold is not None else None
    if name is None:
        raise PageStructureError(
            f"fishpix: {url}: a photo but no scientific name in the first <{SELECTORS['species']}>;"
            " the page has changed"
        )
    genus, epithet = name[1], name[2]
    creator = ""
    label = soup.find(string=SELECTORS["photographer_label"])
    if label is not None and label.find_parent("td") is not None:
        cell = label.find_parent("td").find_next_sibling("td")
        creator = cell.get_text(" ", strip=True) if cell is not None else ""
    return {
        "source_taxon": f"{genus} {epithet}",
        "taxon": genus if epithet.endswith(".") else f"{genus} {epithet}",
        "media_url": urljoin(url, photo["src"]),
        "creator": creator,
    }


def list_records(spec: dict, context: Context) -> Listing:
    base = spec.get("base_url", BASE_URL)
    genus = spec["genus"]
    start, last = int(spec.get("start", 1)), int(spec.get("start", 1)) + int(spec.get("max_pages", 5000))
    records, seen = [], set()
    with tqdm(desc=f"fishpix {genus}", unit="page", file=sys.stderr) as bar:
        for index in range(start, last):
            url = detail_url(base, genus, index)
            try:
                page = context.client.get(url)
            except FetchFailure as failure:
                raise ValueError(f"fishpix: could not read {url}: {failure}") from None
            photo = parse_detail(page.content, url)
            bar.update()
            if photo is None or photo["media_url"] in seen:
                break
            seen.add(photo["media_url"])
            native = PurePosixPath(urlparse(photo["media_url"]).path).stem
            records.append(
                {
                    "record_id": f"fishpix:{native}",
                    "taxon": photo["taxon"],
                    "source_taxon": photo["source_taxon"],
                    "media_url": photo["media_url"],
                    "page_url": url,
                    "license": spec.get("licence", ""),
                    "rights_holder": spec.get("rights_holder", ""),
                    "creator": photo["creator"],
                    "occurrence_id": f"fishpix:{native}",
                    "basis_of_record": "",
                    "dataset_key": f"fishpix:{urlparse(base).netloc}",
                }
            )
        else:
            log.warning("fishpix: stopped at max_pages (%d) before the last page of %s", last - start, genus)
    notes = {} if records else {genus: f"no photo at {detail_url(base, genus, start)}"}
    return Listing(records, notes)


def cite(spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    return (
        f"FishPix, image database of fishes, {spec.get('rights_holder') or HOLDERS}, Japan. "
        f"{spec.get('base_url', BASE_URL)} (accessed {listed.isoformat()}).",
        config_note(spec),
    )


KIND = SourceKind("fishpix", list_records, cite, title="FishPix", network=True)
