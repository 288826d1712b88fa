"""Importing the study's real GBIF download (read where it lies, never copied into the repo)."""

import csv
import zipfile
from collections import Counter

import pytest
from conftest import SHARED_DATA, missing_data

from fishid.sources import base as sources
from fishid.sources import dwca

ARCHIVE = SHARED_DATA / "gbif-download-amphiprion-2018"


@pytest.fixture
def archive():
    if not ARCHIVE.is_dir():
        missing_data(ARCHIVE, "the real GBIF download")
    return ARCHIVE


def rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def expected_species_counts(folder):
    species = {row["gbifID"]: row["species"] or "Amphiprion" for row in rows(folder / "occurrence.txt")}
    return Counter(species[row["gbifID"]] for row in rows(folder / "multimedia.txt"))


def test_one_record_per_multimedia_row_with_the_files_species_counts(archive):
    records, summary = sources.list_source("gbif2018", {"kind": "gbif_download", "path": str(archive)})
    assert len(records) == 1514 == len(rows(archive / "multimedia.txt"))
    assert records["record_id"].is_unique
    assert records["taxon"].value_counts().to_dict() == dict(expected_species_counts(archive))
    assert records["taxon"].value_counts()["Amphiprion clarkii"] == 258
    assert dict(zip(summary["taxon"], summary["records"])) == dict(expected_species_counts(archive))


def test_photos_of_one_occurrence_form_one_group(archive):
    records, _ = sources.list_source("gbif2018", {"kind": "gbif_download", "path": str(archive)})
    photos_per_occurrence = Counter(row["gbifID"] for row in rows(archive / "multimedia.txt"))
    groups = records.groupby("occurrence_id")["record_id"].count()
    assert groups.to_dict() == {f"gbif:{k}": v for k, v in photos_per_occurrence.items()}
    assert groups.max() > 1, "the file has occurrences with several photos"
    occurrence = {row["gbifID"]: row for row in rows(archive / "occurrence.txt")}
    for record in records.sample(50, random_state=0).to_dict("records"):
        gbif_id = record["occurrence_id"].removeprefix("gbif:")
        assert record["record_id"].startswith(f"gbif:{gbif_id}-")
        assert record["basis_of_record"] == occurrence[gbif_id]["basisOfRecord"]
        assert record["dataset_key"] == occurrence[gbif_id]["datasetKey"]
        assert record["preparations"] == occurrence[gbif_id]["preparations"]
    assert (records["preparations"] == "skeleton").sum() > 0, "what cleaning drops by must reach it"


def test_licences_come_out_as_ids(archive):
    records = dwca.read_archive(archive)
    licences = Counter(r["license"] for r in records)
    assert licences["CC-BY-NC-4.0"] > 600 and licences["CC0-1.0"] > 0 and licences["CC-BY-4.0"] > 0
    # Media with no licence of their own take the occurrence's (GBIF requires one per occurrence).
    assert "" not in licences
    # What cannot be recognised stays as written, so the download stage can say what it refused.
    assert licences["http://en.wikipedia.org/wiki/Copyright"] == 3


def test_a_zipped_archive_reads_the_same(archive, tmp_path):
    zipped = tmp_path / "download.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as out:
        for name in ("occurrence.txt", "multimedia.txt"):
            out.write(archive / name, name)
    assert dwca.read_archive(zipped) == dwca.read_archive(archive)


def test_an_archive_without_multimedia_says_what_to_request(tmp_path):
    zipped = tmp_path / "simple.zip"
    with zipfile.ZipFile(zipped, "w") as out:
        out.writestr("occurrence.txt", "gbifID\tbasisOfRecord\tlicense\tdatasetKey\tscientificName\n")
    with pytest.raises(ValueError, match="no multimedia.txt in the zip .*Darwin Core archive"):
        dwca.read_archive(zipped)
