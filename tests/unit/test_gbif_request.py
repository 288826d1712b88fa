"""Requesting a GBIF download and citing the data: pygbif's real requests, answered by a
loopback server that plays the download API's life cycle; the citation on hand-made tables."""

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from fake_sites import FakeSites, Reply, json_reply
from site_replies import (
    DOWNLOAD_DOI,
    DOWNLOAD_KEY,
    DOWNLOAD_PATH,
    download_key,
    download_meta,
    match,
    small_archive,
)

from fishid import cli, web
from fishid.report import citation
from fishid.sources import base as sources
from fishid.sources import gbif_request

ACCOUNT = {"GBIF_USER": "diver", "GBIF_PWD": "s3cret", "GBIF_EMAIL": "diver@example.org"}
REQUEST = {"taxa": ["Amphiprion clarkii"], "country": ["PH"], "year": [2000, 2018]}
ACCOUNTS_DOWNLOADS = "/v1/occurrence/download/user/diver"


class DownloadSites(FakeSites):
    """FakeSites that also answers POST (a download request) as it answers GET at that path,
    keeping each request's JSON body and account."""

    def __enter__(self):
        super().__enter__()
        self.posts = []
        sites = self

        def do_post(handler):
            body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
            user = base64.b64decode(handler.headers["Authorization"].split()[1]).decode().split(":")[0]
            sites.posts.append({"body": json.loads(body), "user": user})
            handler.do_GET()

        self.server.RequestHandlerClass.do_POST = do_post
        return self


@pytest.fixture
def account(monkeypatch):
    for name, value in ACCOUNT.items():
        monkeypatch.setenv(name, value)


def gbif_site(sites, *statuses, key=DOWNLOAD_KEY):
    """The download's life cycle at `sites`: its status in turn (the last repeating), then its zip."""
    sites.add("/v2/species/match", match)
    sites.add(f"/v1/occurrence/download/{key}", *(download_meta(s, key) for s in statuses))
    sites.add(f"{DOWNLOAD_PATH}/{key}", Reply(body=small_archive()))


def listing(sites, tmp_path, request=REQUEST, waits=None, read_timeout=30.0):
    spec = {"kind": "gbif_download", "request": request, "cache": str(tmp_path / "gbif")}
    spec |= {"api": sites.url("/"), "poll": 0.01}
    settings = web.Settings(backoff=0.01, allow_private_hosts=True, read_timeout=read_timeout)
    client = web.Client(settings, sleep=(waits if waits is not None else []).append)
    return sources.list_source("amphiprion", spec, sources.Context("amphiprion", client=client))


def test_a_requested_download_is_waited_for_fetched_and_recorded_once(tmp_path, account):
    with DownloadSites() as sites:
        sites.add(DOWNLOAD_PATH, download_key())
        gbif_site(sites, "PREPARING", "RUNNING", "SUCCEEDED")
        records, _ = listing(sites, tmp_path)
        hits = sum(sites.hits.values())
        again, _ = listing(sites, tmp_path)
        assert sum(sites.hits.values()) == hits, "a rerun asks GBIF nothing"
    assert len(sites.posts) == 1 and sites.posts[0]["user"] == "diver"
    body = sites.posts[0]["body"]
    assert body["format"] == "DWCA" and body["notification_address"] == ["diver@example.org"]
    predicates = {p["key"]: p for p in body["predicate"]["predicates"]}
    assert predicates["TAXON_KEY"]["values"] == ["4QHKG"]
    assert predicates["MEDIA_TYPE"]["value"] == "StillImage"
    assert predicates["COUNTRY"]["values"] == ["PH"]
    assert [p["value"] for p in body["predicate"]["predicates"] if p["key"] == "YEAR"] == ["2000", "2018"]
    assert list(records["record_id"]) == ["gbif:11-1", "gbif:11-2", "gbif:12-1"]
    assert records.drop(columns="listed_at").equals(again.drop(columns="listed_at"))
    recorded = json.loads((tmp_path / "gbif" / "amphiprion.request.json").read_text())
    assert recorded["key"] == DOWNLOAD_KEY and recorded["doi"] == DOWNLOAD_DOI
    assert recorded["status"] == "SUCCEEDED" and recorded["hash"] == gbif_request.request_hash(REQUEST)
    assert "s3cret" not in json.dumps(recorded)
    assert gbif_request.download_of("amphiprion", {"request": REQUEST, "cache": str(tmp_path / "gbif")}) == {
        "key": DOWNLOAD_KEY,
        "status": "SUCCEEDED",
        "doi": DOWNLOAD_DOI,
        "created": "2024-05-01",
        "totalRecords": 2,
    }


def test_too_many_downloads_running_is_answered_with_a_wait(tmp_path, account):
    waits = []
    with DownloadSites() as sites:
        # 420 "Enhance Your Calm": the account has too many downloads running.
        sites.add(DOWNLOAD_PATH, Reply(status=420, content_type="text/plain"), download_key())
        gbif_site(sites, "SUCCEEDED")
        records, _ = listing(sites, tmp_path, waits=waits)
    assert len(sites.posts) == 2 and len(waits) == 1
    assert len(records) == 3


def accounts_downloads(*downloads) -> Reply:
    """GBIF's list of an account's downloads (/occurrence/download/user/{user})."""
    return json_reply(
        {"offset": 0, "limit": 20, "endOfRecords": True, "count": len(downloads), "results": list(downloads)}
    )


def as_gbif_stores(query: dict) -> dict:
    """A predicate as GBIF gives it back: with defaults of its own added."""
    return {**query, "predicates": [{**part, "matchCase": False} for part in query["predicates"]]}


def listed_download(key, created, query, status="PREPARING") -> dict:
    return {"key": key, "status": status, "created": created.isoformat(), "request": {"predicate": query}}


def test_an_unanswered_download_request_that_reached_gbif_is_not_made_twice(tmp_path, account):
    """The first request reaches GBIF, which starts the download, but its answer never comes
    (the server holds it past the read timeout): the retry finds that download in the
    account's list and asks for no second one."""
    ours = as_gbif_stores(gbif_request.predicate(REQUEST, ["4QHKG"]))
    now = datetime.now(UTC)
    waits = []
    with DownloadSites() as sites:
        sites.add(DOWNLOAD_PATH, Reply(status=201, body=DOWNLOAD_KEY.encode(), content_type="text/plain", delay=3))
        sites.add(ACCOUNTS_DOWNLOADS, accounts_downloads(listed_download(DOWNLOAD_KEY, now, ours)))
        gbif_site(sites, "RUNNING", "SUCCEEDED")
        records, _ = listing(sites, tmp_path, waits=waits, read_timeout=0.3)
    assert len(sites.posts) == 1 and len(waits) == 1, "one request, timed out, then found in the account's list"
    assert json.loads((tmp_path / "gbif" / "amphiprion.request.json").read_text())["key"] == DOWNLOAD_KEY
    assert len(records) == 3


def test_a_download_request_that_reached_no_one_is_made_again(tmp_path, account):
    """A 503 to the request: the account's list holds no download of this predicate since
    (only one of another predicate, one ended and one from yesterday), so it is asked again."""
    ours = as_gbif_stores(gbif_request.predicate(REQUEST, ["4QHKG"]))
    other = as_gbif_stores(gbif_request.predicate({"taxa": ["Amphiprion clarkii"]}, ["4QHKG"]))
    now = datetime.now(UTC)
    listed = [
        listed_download("0000001-240501101010101", now, other),
        listed_download("0000002-240501101010101", now, ours, status="CANCELLED"),
        listed_download("0000003-240501101010101", now - timedelta(days=1), ours, status="SUCCEEDED"),
        {"key": "<b>0000004-1</b>", "status": ["RUNNING"], "created": "yesterday", "request": ours},
        {"key": "0000005-240501101010101", "status": "RUNNING", "created": now.isoformat(), "request": "<b>"},
        "not a download",
    ]
    with DownloadSites() as sites:
        sites.add(DOWNLOAD_PATH, Reply(status=503, content_type="text/plain"), download_key())
        sites.add(ACCOUNTS_DOWNLOADS, accounts_downloads(*listed))
        gbif_site(sites, "SUCCEEDED")
        records, _ = listing(sites, tmp_path)
    assert len(sites.posts) == 2 and sites.hits[ACCOUNTS_DOWNLOADS] == 1
    assert json.loads((tmp_path / "gbif" / "amphiprion.request.json").read_text())["key"] == DOWNLOAD_KEY


def test_a_failed_download_is_reported_with_its_key_and_a_rerun_requests_anew(tmp_path, account):
    with DownloadSites() as sites:
        sites.add(DOWNLOAD_PATH, download_key(), download_key("0001235-240501101010101"))
        gbif_site(sites, "RUNNING", "FAILED")
        gbif_site(sites, "SUCCEEDED", key="0001235-240501101010101")
        with pytest.raises(ValueError, match=f"download {DOWNLOAD_KEY} ended FAILED"):
            listing(sites, tmp_path)
        recorded = json.loads((tmp_path / "gbif" / "amphiprion.request.json").read_text())
        assert recorded["status"] == "FAILED"
        listing(sites, tmp_path)
    assert len(sites.posts) == 2
    assert json.loads((tmp_path / "gbif" / "amphiprion.request.json").read_text())["status"] == "SUCCEEDED"


def test_missing_credentials_are_named_before_any_request(tmp_path, monkeypatch):
    monkeypatch.setenv("GBIF_USER", "diver")
    monkeypatch.delenv("GBIF_PWD", raising=False)
    monkeypatch.delenv("GBIF_EMAIL", raising=False)
    with DownloadSites() as sites:
        with pytest.raises(ValueError, match="GBIF_PWD, GBIF_EMAIL"):
            listing(sites, tmp_path)
    assert not sites.queries and not sites.posts


def test_a_changed_request_makes_a_new_download(tmp_path, account):
    second = "0001236-240501101010101"
    with DownloadSites() as sites:
        sites.add(DOWNLOAD_PATH, download_key(), download_key(second))
        gbif_site(sites, "SUCCEEDED")
        gbif_site(sites, "SUCCEEDED", key=second)
        listing(sites, tmp_path)
        listing(sites, tmp_path, REQUEST | {"country": ["ID"]})
    assert len(sites.posts) == 2
    assert sites.posts[1]["body"]["predicate"]["predicates"][2]["values"] == ["ID"]
    assert json.loads((tmp_path / "gbif" / "amphiprion.request.json").read_text())["key"] == second
    assert (tmp_path / "gbif" / f"{second}.zip").is_file()


# The citation, on hand-made tables: records -> downloads (sha256) -> splits.
EVIL = "*Evil* [x](javascript:alert(1)) <img src=x onerror=alert(1)>"
SHAS = {letter: letter * 64 for letter in "abcdefgh"}
USED = [  # (record, source, image, GBIF dataset, rights holder)
    ("gbif:1-1", "gbif2018", "a", "d1", "A. Diver"),
    ("gbif:2-1", "gbif2018", "b", "d1", "A. Diver"),
    ("gbif:3-1", "gbif2018", "c", "d2", "B. Diver"),  # image c is in no dataset
    ("gbif:4-1", "search", "d", "d2", "<script>alert(1)</script> & Co | x"),
    ("gbif:5-1", "search", "e", "d3", "C"),  # its download failed
    ("gbif:6-1", "search", "a", "d3", "C"),  # the same photo as gbif:1-1
    ("fishbase:7", "fishbase", "f", "", "J. E. Randall"),
    ("folder:8", "mine", "g", "folder:photos", EVIL),
    ("gbif:9-1", "old", "h", "d1", "D"),
]


def hand_made_tables():
    records = pd.DataFrame(
        [
            {
                "record_id": r,
                "source": s,
                "dataset_key": d,
                "rights_holder": h,
                "listed_at": "2024-03-02T10:00:00+00:00",
            }
            for r, s, _, d, h in USED
        ]
    )
    downloads = pd.DataFrame(
        [{"record_id": r, "sha256": SHAS[i], "error": "HTTP 404" if r == "gbif:5-1" else ""} for r, _, i, _, _ in USED]
    )
    splits = pd.DataFrame(
        [{"dataset": "species", "sha256": SHAS[i]} for i in "abdfgh"]
        + [{"dataset": "genus", "sha256": SHAS[i]} for i in "ab"]
    )
    return records, downloads, splits


def configured(tmp_path):
    cache = tmp_path / "gbif"
    gbif_request.write_json(gbif_request.record_path(cache, "gbif2018"), {"key": DOWNLOAD_KEY, "hash": "h"})
    meta = {"status": "SUCCEEDED", "doi": DOWNLOAD_DOI, "created": "2024-05-01T10:10:10.000+00:00"}
    gbif_request.write_json(gbif_request.meta_path(cache, DOWNLOAD_KEY), gbif_request.facts(DOWNLOAD_KEY, meta))
    return {
        "gbif2018": {"kind": "gbif_download", "request": REQUEST, "cache": str(cache)},
        "old": {"kind": "gbif_download", "path": "downloads/0000099-140929101555934.zip", "cache": str(cache)},
        "search": {"kind": "gbif", "names": ["Amphiprion"]},
        "fishbase": {"kind": "fishbase", "genera": ["Amphiprion"]},
        "mine": {"kind": "folder", "path": "photos", "rights_holder": EVIL, "licence": "CC-BY-4.0"},
        "fishpix": {"kind": "fishpix", "genus": "Amphiprion"},
    }


def test_the_derived_dataset_counts_the_final_datasets_images_per_gbif_dataset(tmp_path):
    shown = citation.view(configured(tmp_path), *hand_made_tables())
    # d1: a, b (gbif2018) and h (old); d2: d only (c is in no dataset); d3: a (e failed to download).
    assert shown["derived_dataset"] == [
        {"datasetKey": "d1", "count": 3},
        {"datasetKey": "d2", "count": 1},
        {"datasetKey": "d3", "count": 1},
    ]
    images = {entry["source"]: entry["images"] for entry in shown["citations"]}
    assert images == {"gbif2018": 2, "old": 1, "search": 2, "fishbase": 1, "mine": 1, "fishpix": 0}
    mine = next(entry for entry in shown["citations"] if entry["source"] == "mine")
    assert mine["rights_holders"] == [(EVIL, 1)], "the view is plain text, for a template that escapes it"


def test_citation_md_cites_each_source_as_its_terms_ask(tmp_path):
    text = citation.markdown(citation.view(configured(tmp_path), *hand_made_tables()))
    assert f"GBIF.org (1 May 2024) GBIF Occurrence Download https://doi.org/{DOWNLOAD_DOI}" in text
    assert "GBIF Occurrence Download 0000099-140929101555934 (https://www.gbif.org/occurrence/download/" in text
    assert f"register a derived dataset at {citation.REGISTER_URL}" in text
    assert "Froese, R. and D. Pauly. Editors. 2024. FishBase." in text and "version (03/2024)" in text
    assert "The final datasets use 6 image(s) from 5 source(s)." in text, "a photo of two sources is one image"
    assert "Configured, but no image of theirs is in a final dataset: fishpix." in text


def test_markup_in_a_rights_holder_does_not_break_the_markdown(tmp_path):
    text = citation.markdown(citation.view(configured(tmp_path), *hand_made_tables()))
    for line in text.splitlines():
        if "Evil" in line or "script" in line:
            assert not re.search(r"(?<!\\)[<>\[\]*&|]", line), line
    assert r"\*Evil\* \[x\](javascript:alert(1)) \<img src=x onerror=alert(1)\>" in text
    assert r"- \<script\>alert(1)\</script\> \& Co \| x (1)" in text
    markdown_it = pytest.importorskip("markdown_it")
    # CommonMark passes raw HTML through: none of the rights holders' may come out as markup.
    html = markdown_it.MarkdownIt("commonmark").render(text)
    assert "<img" not in html and "<script" not in html and "<a " not in html and "<em>" not in html


def test_the_citation_command_writes_both_files(tmp_path):
    records, downloads, splits = hand_made_tables()
    paths = {}
    for name, table in (("records", records), ("downloads", downloads), ("splits", splits)):
        paths[name] = tmp_path / f"{name}.tsv"
        table.to_csv(paths[name], sep="\t", index=False)
    out, derived = tmp_path / "provenance" / "citation.md", tmp_path / "provenance" / "derived_dataset.tsv"
    arguments = ["citation", "--spec", json.dumps(configured(tmp_path)), "--out", str(out), "--derived", str(derived)]
    cli.main(arguments + [f"--{name}={path}" for name, path in paths.items()])
    assert out.read_text().startswith("# How to cite the data")
    assert derived.read_text() == "datasetKey\tcount\nd1\t3\nd2\t1\nd3\t1\n"
