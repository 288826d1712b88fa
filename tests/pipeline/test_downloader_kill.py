"""Kill the downloader (SIGKILL) halfway, rerun it: the result equals an uninterrupted run's."""

import json
import os
import signal
import subprocess
import time
from urllib.parse import urlparse

import pandas as pd
from fake_sites import FakeSites, image_reply
from projectrun import FETCH_SPEC, fetch_command

from fishid.tables import RECORD_COLUMNS

IMAGES = 40


def write_records(path, sites):
    rows = []
    for i in range(IMAGES):
        url = sites.add(f"/img/{i}.jpg", image_reply(i))
        rows.append({"record_id": f"gbif:{1000 + i}-1", "media_url": url, "license": "CC-BY-4.0", "taxon": "A b"})
    pd.DataFrame(rows).reindex(columns=RECORD_COLUMNS, fill_value="").to_csv(path, sep="\t", index=False)


def journal_lines(work):
    journal = work / "downloads.tsv.journal"
    return journal.read_text().count("\n") if journal.exists() else 0


def store_files(work):
    return {
        p.relative_to(work / "store").as_posix(): p.read_bytes() for p in (work / "store").rglob("*") if p.is_file()
    }


def final_table(work):
    return pd.read_csv(work / "downloads.tsv", sep="\t", dtype=str, keep_default_na=False).drop(columns="retrieved_at")


def test_a_killed_download_resumes_to_the_same_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for work in (whole, killed):
        work.mkdir()

    with FakeSites(latency=0.05) as sites:
        write_records(whole / "records.tsv", sites)
        subprocess.run(fetch_command(whole), check=True, capture_output=True, timeout=120)

    with FakeSites(latency=0.05) as sites:
        write_records(killed / "records.tsv", sites)
        process = subprocess.Popen(fetch_command(killed), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while journal_lines(killed) < IMAGES // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not (killed / "downloads.tsv").exists()
        finished_before = journal_lines(killed)
        assert IMAGES // 2 <= finished_before < IMAGES, "the kill must land halfway"
        lines = (killed / "downloads.tsv.journal").read_text().splitlines()
        stored_before = {urlparse(json.loads(line)["media_url"]).path for line in lines}

        subprocess.run(fetch_command(killed), check=True, capture_output=True, timeout=120)
        hits_after = dict(sites.hits)

    assert final_table(killed).equals(final_table(whole))
    assert store_files(killed) == store_files(whole)
    assert len(store_files(whole)) == IMAGES
    assert not [p for p in (killed / "store").rglob(".*") if p.is_file()], "a partial file was left behind"
    # Nothing already stored was fetched again; only the requests in flight at the kill were repeated.
    assert all(hits_after[path] == 1 for path in stored_before)
    assert len([path for path, n in hits_after.items() if n > 1]) <= FETCH_SPEC["download"]["workers"]
