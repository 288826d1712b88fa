"""Hostile records, second pass (issue 24): tables that read back any string they were given,
and one bad record (a GBIF answer, an archive row, a file name) left out with its reason
while the rest are listed and stored. Loopback servers and crafted files only."""

import hashlib
import io
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_sites import FakeSites, image_reply, jpeg, json_reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from site_replies import dwca_zip, match, media, occurrence

from fishid import cli, web
from fishid.clean.stage import CLEAN_COLUMNS
from fishid.download import fetch
from fishid.report.attribution import neutralise
from fishid.review import decisions
from fishid.sources import base as sources
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, SPLIT_COLUMNS, read_table, write_table

LOOPBACK = web.Settings(backoff=0.01, rate=0, retries=0, allow_private_hosts=True)
# Characters that end rows or fields, or are the quoting itself, drawn often among any others.
AWKWARD = ["\r", "\n", "\r\n", "\t", '"', "\x00", "\\", "\\x41", ",", "\x0b", "\x1b", "\x85", "\u2028", "=", " "]
TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(AWKWARD)), max_size=8).map("".join)
FEW_ROWS = st.lists(TEXT, min_size=1, max_size=4)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gbif_listing(sites: FakeSites, found: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """list_source of a gbif source whose occurrence search answers `found` on loopback."""
    sites.add("/v2/species/match", match)
    answer = {"offset": 0, "limit": 20, "endOfRecords": True, "count": len(found), "results": found}
    sites.add("/v1/occurrence/search", json_reply(answer))
    spec = {"kind": "gbif", "names": ["Amphiprion clarkii"], "api": sites.url("/")}
    return sources.list_source("gbif", spec, sources.Context("gbif", client=web.Client(LOOPBACK)))


# --------------------------------------------------------------------------- tables round-trip


def test_a_carriage_return_in_a_gbif_creator_reads_back_as_one_row(tmp_path):
    with FakeSites() as sites:
        found = [
            occurrence(51, "Amphiprion clarkii", [media(sites.url("/img/1.jpg"), creator="Ann\rgbif:forged")]),
            occurrence(52, "Amphiprion clarkii", [media("https://evil.example/x.jpg")]),
        ]
        records, _ = gbif_listing(sites, found)
    write_table(records, tmp_path / "records.tsv", RECORD_COLUMNS)
    back = read_table(tmp_path / "records.tsv", RECORD_COLUMNS)
    assert len(back) == 2
    assert back.to_dict("records") == records[RECORD_COLUMNS].to_dict("records")
    assert back["creator"][0] == "Ann\rgbif:forged" and list(back["occurrence_id"]) == ["gbif:51", "gbif:52"]


@PROPERTY
@given(FEW_ROWS, FEW_ROWS)
def test_any_string_reads_back_from_the_stage_tables_and_decisions(texts, reasons):
    others = list(reversed(texts))
    table = pd.DataFrame({"text": texts, "score": np.arange(len(texts)) + 0.25, "other": others})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.tsv"
        write_table(table, path)
        written = path.read_text(encoding="utf-8")
        back = read_table(path)
        exclusions = Path(folder) / "exclusions.tsv"
        for n, reason in enumerate(reasons):
            if reason.split():  # a decision needs a reason; the app squashes its whitespace
                decisions.exclude(exclusions, f"{n:064x}", reason)
        kept = read_table(exclusions) if exclusions.exists() else pd.DataFrame({"reason": []})
    assert (list(back["text"]), list(back["other"])) == (texts, others)
    assert list(back["score"]) == [str(s) for s in table["score"]]
    assert list(kept["reason"]) == [" ".join(r.split()) for r in reasons if r.split()]
    # Only a field holding a control character is written otherwise than pandas writes it.
    if not any(re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", t) for t in texts):
        assert written == table.to_csv(sep="\t", index=False)


@settings(PROPERTY, max_examples=40)  # each example runs `fishid attribution`
@given(FEW_ROWS)
def test_any_string_reads_back_from_the_attribution_csv(texts):
    n = len(texts)
    shas = [f"{i:064x}" for i in range(n)]
    records = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "taxon": "A a", "creator": texts})
    records["rights_holder"] = list(reversed(texts))
    downloads = pd.DataFrame({"record_id": records["record_id"], "sha256": shas, "error": ""})
    clean = pd.DataFrame({"sha256": shas, "taxon": "A a"})
    splits = pd.DataFrame({"dataset": "two", "sha256": shas})
    with tempfile.TemporaryDirectory() as folder:
        tables = {"records": records, "downloads": downloads, "clean": clean, "splits": splits}
        columns = [RECORD_COLUMNS, DOWNLOAD_COLUMNS, CLEAN_COLUMNS, SPLIT_COLUMNS]
        paths = {name: Path(folder) / f"{name}.tsv" for name in tables}
        for (name, frame), names in zip(tables.items(), columns):
            write_table(frame, paths[name], names)
        out = Path(folder) / "attribution.csv"
        cli.main(["attribution", *[f"--{name}={path}" for name, path in paths.items()], "--out", str(out)])
        attribution = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("record_id")
    assert list(attribution.loc[records["record_id"], "creator"]) == [neutralise(t) for t in texts]
    assert list(attribution.loc[records["record_id"], "rights_holder"]) == [neutralise(t) for t in reversed(texts)]


@PROPERTY
@given(FEW_ROWS)
def test_any_string_reads_back_from_the_predictions_csv(texts):
    from fishid.tables import table_text  # what `fishid predict` and the review app's export write with

    n = len(texts)
    predictions = pd.DataFrame({"file": texts, "score:A a": np.linspace(0, 1, n), "error": list(reversed(texts))})
    text = table_text(predictions, sep=",", float_format="%.6f")
    back = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert (list(back["file"]), list(back["error"])) == (texts, list(reversed(texts)))
    assert list(back["score:A a"]) == [f"{s:.6f}" for s in predictions["score:A a"]]


# --------------------------------------------------------------------------- GBIF search answers


def test_gbif_answers_of_the_wrong_shape_are_left_out_naming_the_record_and_the_rest_stored(tmp_path):
    with FakeSites() as sites:
        image = {n: sites.add(f"/img/{n}.jpg", image_reply(n)) for n in range(1, 5)}
        keyless = occurrence(61, "Amphiprion clarkii", [media(image[4])])
        del keyless["key"], keyless["gbifID"]
        found = [
            occurrence(60, "Amphiprion clarkii", [media(image[1])]),
            keyless,
            occurrence(62, "Amphiprion clarkii", image[4]),  # media as a string
            occurrence(63, "Amphiprion clarkii", media(image[2])),  # media as one object
            occurrence(64, "Amphiprion clarkii", [media(image[3])]) | {"species": 42},
            "not an occurrence",
        ]
        records, summary = gbif_listing(sites, found)
        table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "journal", LOOPBACK)
    assert list(records["record_id"]) == ["gbif:60-1", "gbif:63-1", "gbif:64-1"]
    assert set(records["taxon"]) == {"Amphiprion clarkii"}
    assert list(table["error"]) == ["", "", ""] and table["sha256"].str.len().eq(64).all()
    note = dict(zip(summary["taxon"], summary["note"]))["Amphiprion clarkii"]
    for said in (
        "search result 2 has no key (gbifID); skipped",
        "gbif:62: media is a str, not a list; skipped",
        "gbif:64: species is a int, not a name",
        "search result 6 is a str, not an occurrence; skipped",
    ):
        assert said in note
    assert dict(zip(summary["taxon"], summary["records"])) == {"Amphiprion clarkii": 3}


# --------------------------------------------------------------------------- Darwin Core archives

OCCURRENCES = (
    "gbifID\tbasisOfRecord\tlicense\tdatasetKey\tscientificName\tspecies\toccurrenceRemarks\n"
    "11\tHUMAN_OBSERVATION\tCC_BY_4_0\td1\tAmphiprion clarkii (Bennett, 1830)\tAmphiprion clarkii\t{remark}\n"
    "12\tHUMAN_OBSERVATION\tCC0_1_0\td2\tAmphiprion ocellaris Cuvier, 1830\tAmphiprion ocellaris\t\n"
)
MEDIA_HEADER = "gbifID\ttype\tidentifier\tcreator\n"


def media_row(gbif_id, n, creator="A. Diver"):
    return f"{gbif_id}\tStillImage\thttps://img.example.org/{n}.jpg\t{creator}\n"


def archive_listing(tmp_path, members: dict) -> tuple[pd.DataFrame, dict]:
    """list_source of a zip holding `members` (name: text or bytes); the summary's notes by taxon."""
    path = tmp_path / "download.zip"
    with zipfile.ZipFile(path, "w") as zipped:
        for name, content in members.items():
            zipped.writestr(name, content)
    records, summary = sources.list_source("dl", {"kind": "gbif_download", "path": str(path)})
    return records, dict(zip(summary["taxon"], summary["note"]))


def test_a_field_of_a_megabyte_in_an_archive_is_read(tmp_path):
    path = tmp_path / "download.zip"
    remark = "long " * 200_000
    path.write_bytes(dwca_zip(OCCURRENCES.format(remark=remark), MEDIA_HEADER + media_row(11, 1) + media_row(12, 2)))
    records, _ = sources.list_source("dl", {"kind": "gbif_download", "path": str(path)})
    assert list(records["record_id"]) == ["gbif:11-1", "gbif:12-1"]


def test_a_byte_that_is_not_utf8_keeps_its_record_and_is_named_by_file_and_line(tmp_path):
    multimedia = (MEDIA_HEADER + media_row(11, 1) + media_row(12, 2, "Jos\udce9")).encode("utf-8", "surrogateescape")
    records, notes = archive_listing(
        tmp_path, {"occurrence.txt": OCCURRENCES.format(remark=""), "multimedia.txt": multimedia}
    )
    assert list(records["creator"]) == ["A. Diver", "Jos\\xe9"]
    assert (
        notes[""]
        == f"{tmp_path / 'download.zip'}: multimedia.txt line 3: bytes that are not UTF-8 in creator, kept as \\xNN"
    )


def test_an_orphan_multimedia_row_is_left_out_naming_its_line(tmp_path):
    multimedia = MEDIA_HEADER + media_row(11, 1) + media_row(99, 9) + media_row(12, 2)
    records, notes = archive_listing(
        tmp_path, {"occurrence.txt": OCCURRENCES.format(remark=""), "multimedia.txt": multimedia}
    )
    assert list(records["record_id"]) == ["gbif:11-1", "gbif:12-1"]
    assert (
        notes[""]
        == f"{tmp_path / 'download.zip'}: multimedia.txt line 3: gbifID '99' is not in occurrence.txt; skipped"
    )


def test_a_carriage_return_or_a_stray_tab_in_an_archive_row_forges_nothing(tmp_path):
    # GBIF's tables are unquoted: a line is a row. A \r stays in its field; a row with more
    # fields than the header has lost its alignment and is left out.
    multimedia = MEDIA_HEADER + media_row(11, 1, "Ann\r12") + media_row(12, 2, "B\thttps://evil.example/x.jpg")
    records, notes = archive_listing(
        tmp_path, {"occurrence.txt": OCCURRENCES.format(remark=""), "multimedia.txt": multimedia}
    )
    assert records[["record_id", "creator", "media_url"]].values.tolist() == [
        ["gbif:11-1", "Ann\r12", "https://img.example.org/1.jpg"]
    ]
    assert notes[""].endswith("multimedia.txt line 3: 5 fields, more than the header's 4; skipped")


def test_archive_members_named_outside_the_archive_are_refused(tmp_path):
    tables = {"occurrence.txt": OCCURRENCES.format(remark=""), "multimedia.txt": MEDIA_HEADER + media_row(11, 1)}
    outside = {"../occurrence.txt": tables["occurrence.txt"], "/tmp/x/multimedia.txt": tables["multimedia.txt"]}
    with pytest.raises(ValueError, match=r"no occurrence.txt in the zip .*'\.\./occurrence.txt' refused: its name"):
        archive_listing(tmp_path, outside)
    # Beside the real tables, such members are never read, and the notes say so.
    records, notes = archive_listing(tmp_path, tables | {"../../multimedia.txt": MEDIA_HEADER + media_row(12, 5)})
    assert list(records["media_url"]) == ["https://img.example.org/1.jpg"]
    assert "member '../../multimedia.txt' refused: its name leads outside the archive" in notes[""]


# --------------------------------------------------------------------------- folder sources


def test_a_name_spelling_an_escape_and_the_bytes_it_spells_are_two_records(tmp_path):
    root = tmp_path / "photos"
    (root / "clown").mkdir(parents=True)
    files = {os.fsdecode(b"caf\xe9.jpg"): jpeg(1), "caf\\xe9.jpg": jpeg(2), "plain.jpg": jpeg(3)}
    for name, data in files.items():
        (root / "clown" / name).write_bytes(data)
    records, _ = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    # An ordinary name, and one that is not UTF-8, keep the ids they had; the literal
    # backslash that would read as an escape is written as one (\x5c).
    assert sorted(records["record_id"]) == [
        "mine:clown/caf\\x5cxe9.jpg",
        "mine:clown/caf\\xe9.jpg",
        "mine:clown/plain.jpg",
    ]
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "journal")
    assert list(table["error"]) == ["", "", ""]
    expected = {
        "mine:clown/caf\\xe9.jpg": files[os.fsdecode(b"caf\xe9.jpg")],
        "mine:clown/caf\\x5cxe9.jpg": files["caf\\xe9.jpg"],
        "mine:clown/plain.jpg": files["plain.jpg"],
    }
    assert dict(zip(table["record_id"], table["sha256"])) == {
        record: hashlib.sha256(data).hexdigest() for record, data in expected.items()
    }
