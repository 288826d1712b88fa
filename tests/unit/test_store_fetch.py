import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from fishid.download import fetch, store
from fishid.tables import DOWNLOAD_COLUMNS


def jpeg_bytes(color=(200, 100, 50)):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_put_is_content_addressed_and_idempotent(tmp_path):
    data = jpeg_bytes()
    sha, rel = store.put(tmp_path, data, "jpg")
    assert rel == f"{sha[:2]}/{sha}.jpg"
    assert store.sha256_of_file(tmp_path / rel) == sha
    assert store.put(tmp_path, data, "jpg") == (sha, rel)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{sha}.jpg"]


def test_sniff_trusts_bytes_not_names():
    assert store.sniff_image(jpeg_bytes()) == ("jpg", "image/jpeg")
    assert store.sniff_image(b"<!DOCTYPE html><html>Not found</html>") is None
    assert store.sniff_image(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None


def records_for(tmp_path, n):
    paths = []
    for i in range(n):
        path = tmp_path / "in" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(jpeg_bytes((i * 20, 50, 80)))
        paths.append(path)
    return pd.DataFrame({"record_id": [f"folder:{i}" for i in range(n)], "media_url": [p.as_uri() for p in paths]})


def test_errors_become_rows_not_crashes(tmp_path):
    records = records_for(tmp_path, 2)
    html = tmp_path / "in" / "page.jpg"
    html.write_text("<html>error page</html>")
    extra = pd.DataFrame(
        {
            "record_id": ["folder:html", "folder:gone", "web:1"],
            "media_url": [html.as_uri(), (tmp_path / "missing.jpg").as_uri(), "ftp://example.org/x.jpg"],
        }
    )
    table = fetch.fetch_all(
        pd.concat([records, extra]), tmp_path / "store", tmp_path / "journal", local_roots=[tmp_path]
    )
    assert list(table.columns) == DOWNLOAD_COLUMNS
    errors = dict(zip(table["record_id"], table["error"]))
    assert errors["folder:0"] == "" and errors["folder:1"] == ""
    assert errors["folder:html"].startswith("not an image")
    assert errors["folder:gone"].startswith("file not found")
    assert "unsupported URL scheme 'ftp'" in errors["web:1"]
    assert len(list((tmp_path / "store").rglob("*.jpg"))) == 2


def test_resume_skips_finished_records_and_survives_a_torn_line(tmp_path):
    records = records_for(tmp_path, 4)
    journal = tmp_path / "downloads.tsv.journal"
    first = fetch.fetch_all(records.iloc[:2], tmp_path / "store", journal, local_roots=[tmp_path])
    # A run killed while writing its third line.
    with journal.open("a") as log:
        log.write('{"record_id": "folder:2", "sha')
    before = {r["record_id"]: r["retrieved_at"] for r in map(json.loads, journal.read_text().splitlines()[:2])}
    table = fetch.fetch_all(records, tmp_path / "store", journal, local_roots=[tmp_path])
    assert list(table["record_id"]) == list(records["record_id"])
    assert (table["error"] == "").all()
    assert dict(zip(table["record_id"][:2], table["retrieved_at"][:2])) == before
    assert table.iloc[:2].equals(first)


def test_a_record_whose_image_vanished_is_fetched_again(tmp_path):
    records = records_for(tmp_path, 1)
    journal = tmp_path / "journal"
    table = fetch.fetch_all(records, tmp_path / "store", journal, local_roots=[tmp_path])
    Path(tmp_path / "store", table["path"][0]).unlink()
    again = fetch.fetch_all(records, tmp_path / "store", journal, local_roots=[tmp_path])
    assert Path(tmp_path / "store", again["path"][0]).exists()


def test_the_torn_line_is_dropped_so_later_lines_stay_readable(tmp_path):
    records = records_for(tmp_path, 3)
    journal = tmp_path / "journal"
    fetch.fetch_all(records.iloc[:1], tmp_path / "store", journal, local_roots=[tmp_path])
    with journal.open("a") as log:
        log.write('{"record_id": "folder:1", "sha')
    fetch.fetch_all(records, tmp_path / "store", journal, local_roots=[tmp_path])
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    # Concurrent downloads finish in any order; every line is whole and each record is there once.
    assert sorted(r["record_id"] for r in rows) == ["folder:0", "folder:1", "folder:2"]


def test_partial_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    (tmp_path / "ab").mkdir()
    dead = tmp_path / "ab" / f".part-{host}-{dead_pid}-x1y2z3"
    alive = tmp_path / "ab" / f".part-{host}-{os.getpid()}-a1b2c3"
    other_host = tmp_path / "ab" / f".part-elsewhere-{dead_pid}-q1w2e3"
    for path in (dead, alive, other_host):
        path.write_bytes(b"\xff\xd8\xff partial")
    assert store.remove_partials(tmp_path) == [dead]
    assert alive.exists() and other_host.exists()
