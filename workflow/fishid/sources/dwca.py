"""A GBIF download (Darwin Core archive) as a source: one record per multimedia row.

The archive is read where it lies, zipped or extracted, by the header rows of its
tab-separated `occurrence.txt` and `multimedia.txt` (joined on `gbifID`), so an archive
whose `meta.xml` was lost still reads. Each record's ranks and accepted key are the
archive's own (occurrence.txt's kingdom ... species and acceptedTaxonKey columns, where it
has them; fishid.sources.gbif.occurrence_ranks). A user online may give the download's key
instead of a path, or a `request` that asks GBIF for a new download: pygbif fetches the
zip once into `cache` (default resources/gbif), when GBIF has built it (gbif_request).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from contextlib import contextmanager
from datetime import date
from pathlib import Path, PurePosixPath

from fishid import licences
from fishid.sources import gbif_request
from fishid.sources.base import Context, Listing, SourceKind, day_of
from fishid.sources.gbif import canonical, gbif_date, occurrence_ranks, unregistered
from fishid.tables import readable

log = logging.getLogger(__name__)
OCCURRENCE_FIELDS = ["gbifID", "basisOfRecord", "license", "datasetKey", "scientificName"]
MULTIMEDIA_FIELDS = ["gbifID", "identifier"]
# The longest row read: room for any real remark or dynamicProperties (csv's field limit,
# 128 KiB, stopped the whole source), while one row still cannot fill the memory.
LINE_LIMIT = 16 * 1024 * 1024
_UNDECODED = re.compile("[\udc80-\udcff]")  # the bytes that were not UTF-8 (surrogateescape)


def _outside(member: str) -> bool:
    """Whether a zip member's name leads outside the archive (absolute, or through `..`)."""
    path = PurePosixPath(member)
    return path.is_absolute() or ".." in path.parts


def _member(zipped: zipfile.ZipFile, archive: Path, name: str) -> tuple[str, list[str]]:
    """The member holding table `name`, and a problem for each member of that name refused
    because its name leads outside the archive (never read, even from the zip)."""
    members = [m for m in zipped.namelist() if PurePosixPath(m).name == name]
    refused = [m for m in members if _outside(m)]
    # The shallowest member of that name: GBIF zips hold it at the top, hand-made ones in a folder.
    inside = sorted((m for m in members if not _outside(m)), key=lambda m: m.count("/"))
    problems = [f"{archive}: member {m!r} refused: its name leads outside the archive" for m in refused]
    if not inside:
        raise ValueError(
            f"{archive}: no {name} in the zip (request the download in Darwin Core archive format)"
            + "".join(f"; {problem}" for problem in problems)
        )
    return inside[0], problems


@contextmanager
def _open_table(archive: Path, name: str):
    """(text handle, problems) of table `name`. Lines end at \\n only, so a \\r is part of its
    field; bytes that are not UTF-8 are kept as surrogates, for _rows to write as \\xNN."""
    options = {"encoding": "utf-8-sig", "errors": "surrogateescape", "newline": "\n"}
    if archive.is_dir():
        path = archive / name
        if not path.is_file():
            raise ValueError(f"{archive}: no {name} (a GBIF download in Darwin Core archive format has one)")
        with path.open(**options) as handle:
            yield handle, []
        return
    with zipfile.ZipFile(archive) as zipped:
        member, problems = _member(zipped, archive, name)
        with zipped.open(member) as raw:
            yield io.TextIOWrapper(raw, **options), problems


def _lines(handle):
    """(number, text) of each line, without its line end; text None for a line over LINE_LIMIT."""
    number = 0
    while line := handle.readline(LINE_LIMIT):
        number += 1
        if line.endswith("\n") or len(line) < LINE_LIMIT:
            yield number, line.removesuffix("\n").removesuffix("\r")
            continue
        while line and not line.endswith("\n"):  # the rest of the long line, unread
            line = handle.readline(LINE_LIMIT)
        yield number, None


def _rows(archive: Path, name: str, required: list[str]):
    """(line, row, problem) for each row of table `name`: row None when it is left out, problem
    (naming the file and line) when it is left out or read with a change.

    The tables are GBIF's tab-separated text without quoting (meta.xml's fieldsEnclosedBy
    is empty): a line is a row, split at tabs. A row shorter than the header is filled with
    empty fields; a longer one has lost its alignment and is left out."""
    with _open_table(archive, name) as (handle, refused):
        for problem in refused:
            yield 0, None, problem
        lines = _lines(handle)
        _, header = next(lines, (1, ""))
        columns = (header or "").split("\t")
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{archive}: {name} has no column(s) {', '.join(missing)} (line 1)")
        for line, text in lines:
            where = f"{archive}: {name} line {line}"
            if text is None:
                yield line, None, f"{where}: longer than {LINE_LIMIT} characters; skipped"
                continue
            fields = text.split("\t")
            if len(fields) > len(columns):
                yield line, None, f"{where}: {len(fields)} fields, more than the header's {len(columns)}; skipped"
                continue
            if not text:
                continue
            row = dict(zip(columns, fields + [""] * (len(columns) - len(fields))))
            undecoded = [key for key, value in row.items() if _UNDECODED.search(value)]
            kept = {key: readable(value) if key in undecoded else value for key, value in row.items()}
            problem = f"{where}: bytes that are not UTF-8 in {', '.join(undecoded)}, kept as \\xNN"
            yield line, kept, problem if undecoded else None


def read_listing(archive) -> Listing:
    """Records of a Darwin Core archive (folder or zip), in multimedia.txt's order, and the
    rows left out (a photo whose gbifID is not in occurrence.txt) or read with a change."""
    archive = Path(archive)
    if not archive.exists():
        raise ValueError(f"GBIF download not found: {archive}")
    occurrence_rows = list(_rows(archive, "occurrence.txt", OCCURRENCE_FIELDS))
    occurrences = {row["gbifID"]: row for _, row, _ in occurrence_rows if row is not None}
    problems = [("", problem) for _, _, problem in occurrence_rows if problem]
    records, photo_number = [], {}
    for line, media, problem in _rows(archive, "multimedia.txt", MULTIMEDIA_FIELDS):
        if problem:
            problems.append(("", problem))
        if media is None:
            continue
        gbif_id = media["gbifID"]
        occurrence = occurrences.get(gbif_id)
        if occurrence is None:
            where = f"{archive}: multimedia.txt line {line}"
            problems.append(("", f"{where}: gbifID {gbif_id!r} is not in occurrence.txt; skipped"))
            continue
        photo_number[gbif_id] = photo_number.get(gbif_id, 0) + 1
        raw_licence = media.get("license") or occurrence["license"]
        records.append(
            {
                "record_id": f"gbif:{gbif_id}-{photo_number[gbif_id]}",
                "taxon": occurrence.get("species") or canonical(occurrence.get("acceptedScientificName", "")),
                "source_taxon": occurrence["scientificName"],
                **occurrence_ranks(occurrence),
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
    return Listing(records, problems=problems)


def read_archive(archive) -> list[dict]:
    """The records of read_listing."""
    return read_listing(archive).records


def list_records(spec: dict, context: Context) -> Listing:
    if spec.get("path"):
        archive = Path(spec["path"])
    elif spec.get("request"):
        archive = gbif_request.requested_archive(context.name, spec, context)
    else:
        archive = gbif_request.fetch_download(spec["key"], context, spec)
    listing = read_listing(archive)
    records = listing.records
    taxa = {r["taxon"] for r in records}
    for name in spec.get("expect", []):
        if name not in taxa:
            listing.notes[name] = f"no photo of {name} in {archive}"
    log.info("%s: %d photos of %d occurrences", archive, len(records), len({r["occurrence_id"] for r in records}))
    return listing


def local_inputs(spec: dict) -> list[str]:
    return [spec["path"]] if spec.get("path") else []


def cite(spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    """(citation, note) of a gbif_download source from what is recorded of its download
    (gbif_request.download_of): its DOI, else its key, else none (a derived dataset then)."""
    when = gbif_date(day_of(facts.get("created", "")) or listed)
    if facts.get("doi"):
        return f"GBIF.org ({when}) GBIF Occurrence Download https://doi.org/{facts['doi']}", ""
    if facts.get("key"):
        page = f"https://www.gbif.org/occurrence/download/{facts['key']}"
        return (
            f"GBIF.org ({when}) GBIF Occurrence Download {facts['key']} ({page})",
            f"no DOI is recorded for it: cite the DOI its page ({page}) shows",
        )
    return unregistered(listed)


KIND = SourceKind(
    "gbif_download",
    list_records,
    cite,
    title="GBIF",
    local_inputs=local_inputs,
    gbif_datasets=True,
    download_facts=gbif_request.download_of,
)
