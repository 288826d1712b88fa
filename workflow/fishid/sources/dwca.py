"""A GBIF download (Darwin Core archive) as a source: one record per multimedia row.

The archive is read where it lies, zipped or extracted, by the header rows of its
tab-separated `occurrence.txt` and `multimedia.txt` (joined on `gbifID`), so an archive
whose `meta.xml` was lost still reads. A user online may give the download's key
instead of a path, or a `request` that asks GBIF for a new download: pygbif fetches the
zip once into `cache` (default resources/gbif), when GBIF has built it (gbif_request).
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from contextlib import contextmanager
from pathlib import Path

from fishid import licences
from fishid.sources import gbif_request
from fishid.sources.base import Context, Listing
from fishid.sources.gbif import canonical

log = logging.getLogger(__name__)
OCCURRENCE_FIELDS = ["gbifID", "basisOfRecord", "license", "datasetKey", "scientificName"]
MULTIMEDIA_FIELDS = ["gbifID", "identifier"]


@contextmanager
def _open_table(archive: Path, name: str):
    if archive.is_dir():
        path = archive / name
        if not path.is_file():
            raise ValueError(f"{archive}: no {name} (a GBIF download in Darwin Core archive format has one)")
        with path.open(encoding="utf-8", newline="") as handle:
            yield handle
        return
    with zipfile.ZipFile(archive) as zipped:
        # The shallowest member of that name: GBIF zips hold it at the top, hand-made ones in a folder.
        members = sorted((m for m in zipped.namelist() if Path(m).name == name), key=lambda m: m.count("/"))
        if not members:
            raise ValueError(f"{archive}: no {name} in the zip (request the download in Darwin Core archive format)")
        with zipped.open(members[0]) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _rows(archive: Path, name: str, required: list[str]):
    with _open_table(archive, name) as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{archive}: {name} has no column(s) {', '.join(missing)}")
        yield from reader


def read_archive(archive) -> list[dict]:
    """Records of a Darwin Core archive (folder or zip), in multimedia.txt's order."""
    archive = Path(archive)
    if not archive.exists():
        raise ValueError(f"GBIF download not found: {archive}")
    occurrences = {row["gbifID"]: row for row in _rows(archive, "occurrence.txt", OCCURRENCE_FIELDS)}
    records, photo_number = [], {}
    for line, media in enumerate(_rows(archive, "multimedia.txt", MULTIMEDIA_FIELDS), start=2):
        gbif_id = media["gbifID"]
        occurrence = occurrences.get(gbif_id)
        if occurrence is None:
            raise ValueError(f"{archive}: multimedia.txt line {line}: gbifID {gbif_id} is not in occurrence.txt")
        photo_number[gbif_id] = photo_number.get(gbif_id, 0) + 1
        raw_licence = media.get("license") or occurrence["license"]
        records.append(
            {
                "record_id": f"gbif:{gbif_id}-{photo_number[gbif_id]}",
                "taxon": occurrence.get("species") or canonical(occurrence.get("acceptedScientificName", "")),
                "source_taxon": occurrence["scientificName"],
                "media_url": media["identifier"],
                "page_url": media.get("references") or f"https://www.gbif.org/occurrence/{gbif_id}",
                "license": licences.normalise(raw_licence) or raw_licence,
                "rights_holder": media.get("rightsHolder") or occurrence.get("rightsHolder", ""),
                "creator": media.get("creator") or occurrence.get("recordedBy", ""),
                "occurrence_id": f"gbif:{gbif_id}",
                "basis_of_record": occurrence["basisOfRecord"],
                "preparations": occurrence.get("preparations", ""),
                "dataset_key": occurrence["datasetKey"],
            }
        )
    return records


def list_records(spec: dict, context: Context) -> Listing:
    if spec.get("path"):
        archive = Path(spec["path"])
    elif spec.get("request"):
        archive = gbif_request.requested_archive(context.name, spec, context)
    else:
        archive = gbif_request.fetch_download(spec["key"], context, spec)
    records = read_archive(archive)
    notes = {}
    taxa = {r["taxon"] for r in records}
    for name in spec.get("expect", []):
        if name not in taxa:
            notes[name] = f"no photo of {name} in {archive}"
    log.info("%s: %d photos of %d occurrences", archive, len(records), len({r["occurrence_id"] for r in records}))
    return Listing(records, notes)
