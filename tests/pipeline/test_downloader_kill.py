"""Kill the downloader (SIGKILL) halfway, or Snakemake running it, rerun: the result equals an
uninterrupted run's."""

import json
import os
import signal
import subprocess
import time
from urllib.parse import urlparse

import pandas as pd
import yaml
from fake_sites import FakeSites, image_reply
from projectrun import (
    FETCH_SPEC,
    environment,
    fetch_command,
    make_project,
    run_config,
    run_config_path,
    snakemake,
    snakemake_command,
)
from site_replies import dwca_zip

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


def gbif_archive(media_urls, licences=None) -> bytes:
    """A GBIF download (Darwin Core archive) of one occurrence per photo."""
    licences = licences or ["CC0_1_0"] * len(media_urls)
    occurrences = "gbifID\tbasisOfRecord\tlicense\tdatasetKey\tscientificName\tspecies\trightsHolder\n" + "".join(
        f"{1000 + i}\tHUMAN_OBSERVATION\t{licence}\td1\tAmphiprion clarkii (Bennett, 1830)\tAmphiprion clarkii\tX\n"
        for i, licence in enumerate(licences)
    )
    media = "gbifID\ttype\tidentifier\tlicense\n" + "".join(
        f"{1000 + i}\tStillImage\t{url}\t\n" for i, url in enumerate(media_urls)
    )
    return dwca_zip(occurrences, media)


def download_project(root, sites, licences=None):
    """The tiny project with one source: a GBIF download whose photos the loopback server holds."""
    project = make_project(root)
    urls = [sites.add(f"/img/{i}.jpg", image_reply(i)) for i in range(IMAGES)]
    (root / "download.zip").write_bytes(gbif_archive(urls, licences))
    config = run_config(project)
    config |= {"offline": False, "download": FETCH_SPEC["download"]}
    config["sources"] = {"gbif": {"kind": "gbif_download", "path": str(root / "download.zip")}}
    run_config_path(project).write_text(yaml.safe_dump(config))
    return project


TARGET = "resources/downloads/gbif.tsv"


def test_a_killed_snakemake_resumes_after_unlock_to_the_same_result(tmp_path):
    """What the README says to do after `kill -9` of Snakemake itself: the same command says to
    unlock; after `snakemake --unlock` it finishes the download without fetching twice."""
    profile = ("--profile", "profiles/local")
    with FakeSites(latency=0.05) as sites:
        whole = download_project(tmp_path / "whole", sites)
        assert snakemake(whole, TARGET, *profile).returncode == 0

    with FakeSites(latency=0.05) as sites:
        project = download_project(tmp_path / "killed", sites)
        journal = project / f"{TARGET}.journal"
        process = subprocess.Popen(
            snakemake_command(project, TARGET, *profile),
            cwd=project,
            env=environment(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while (not journal.exists() or journal.read_text().count("\n") < IMAGES // 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)  # Snakemake and the job it started
        process.wait()
        done_before = journal.read_text().count("\n")
        assert IMAGES // 2 <= done_before < IMAGES, "the kill must land halfway"
        stored_before = {urlparse(json.loads(line)["media_url"]).path for line in journal.read_text().splitlines()}

        again = snakemake(project, TARGET, *profile)
        assert again.returncode != 0 and "--unlock" in again.stderr, again.stderr[-3000:]
        assert snakemake(project, "--unlock", *profile).returncode == 0
        resumed = snakemake(project, TARGET, *profile)
        hits_after = dict(sites.hits)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def table(root):
        return pd.read_csv(root / TARGET, sep="\t", dtype=str, keep_default_na=False).drop(columns="retrieved_at")

    assert table(project).equals(table(whole))
    images = sorted(p.relative_to(project) for p in (project / "resources/images").rglob("*") if p.is_file())
    assert len(images) == IMAGES and not [p for p in images if p.name.startswith(".")], images
    assert all(hits_after[path] == 1 for path in stored_before)
    assert len([path for path, n in hits_after.items() if n > 1]) <= FETCH_SPEC["download"]["workers"]


def test_a_licence_policy_change_fetches_only_the_newly_allowed_photos(tmp_path):
    """The README: after a change of licence policy, a rerun fetches only what is new."""
    licences = ["CC0_1_0", "CC_BY_NC_4_0"] * (IMAGES // 2)
    with FakeSites() as sites:
        project = download_project(tmp_path, sites, licences)
        config = run_config(project)
        config["licences"] = {"allow": ["CC0"], "unknown": "drop"}
        run_config_path(project).write_text(yaml.safe_dump(config))
        assert snakemake(project, TARGET, "--cores", "1").returncode == 0
        first = dict(sites.hits)
        config["licences"]["allow"] = ["CC0", "CC-BY-NC"]
        run_config_path(project).write_text(yaml.safe_dump(config))
        rerun = snakemake(project, TARGET, "--cores", "1")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        second = {path: n - first.get(path, 0) for path, n in sites.hits.items()}
    cc0 = {f"/img/{i}.jpg" for i in range(0, IMAGES, 2)}
    assert {path for path, n in first.items() if n} == cc0
    assert {path for path, n in second.items() if n} == {f"/img/{i}.jpg" for i in range(1, IMAGES, 2)}
    assert all(n == 1 for n in second.values() if n)
    table = pd.read_csv(project / TARGET, sep="\t", dtype=str, keep_default_na=False)
    assert (table["error"] == "").all() and table["sha256"].str.len().eq(64).all()
