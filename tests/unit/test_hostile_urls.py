"""Hostile URLs, second pass (issue 24): one reading of a URL for the check and the connection,
the address actually connected to checked, and a bad URL one row rather than the end of a fetch;
also the bomb refused at download, refused weights files and the fetch lock of a store and source.

Loopback servers only. The `connections` fixture is the tests' own guard, an audit hook on every
socket.connect of this process: it records where each connection goes and refuses any that
would leave the machine, so that what the code under test tries is seen and nothing is sent."""

import io
import ipaddress
import json
import os
import socket
import struct
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest
import requests
import torch
from fake_sites import FakeSites, Reply, image_reply, json_reply, redirect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from projectrun import fetch_command, fetches_that_wait
from site_replies import DOWNLOAD_KEY, match, media, occurrence
from toydata import TINY_CLIP
from urllib3.util import parse_url as urllib3_parse

from fishid import web
from fishid.download import fetch, store
from fishid.models import clip as clip_models
from fishid.models import registry
from fishid.sources import base as sources
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, read_table

REFUSING = web.Settings(backoff=0.01, rate=0, retries=0, connect_timeout=2)
LOOPBACK = web.Settings(backoff=0.01, rate=0, retries=0, allow_private_hosts=True)
PUBLIC = "93.184.216.34"  # a global address: the tests' guard sees a connection to it and refuses it

_watch = {"on": False, "seen": []}


def _audit(event, args):
    if event == "socket.connect" and _watch["on"] and isinstance(args[1], tuple):
        address = args[1][0]
        _watch["seen"].append(address)
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"the tests refuse a connection to {address}: it would leave the machine")


sys.addaudithook(_audit)  # an audit hook stays for the process: it acts only while a test watches


@pytest.fixture
def connections():
    """The addresses this process connects to during the test (none leaves the machine)."""
    _watch["seen"] = []
    _watch["on"] = True
    try:
        yield _watch["seen"]
    finally:
        _watch["on"] = False


def table_of(records: list[tuple[str, str]], tmp_path, settings=REFUSING, **extra) -> pd.DataFrame:
    """The fetch stage's table (`fishid fetch`, in-process) of (record id, media URL) records."""
    frame = pd.DataFrame(records, columns=["record_id", "media_url"]).assign(license="CC0-1.0")
    frame = frame.reindex(columns=RECORD_COLUMNS, fill_value="")
    frame.to_csv(tmp_path / "records.tsv", sep="\t", index=False)
    download = {f: getattr(settings, f) for f in ("backoff", "rate", "retries", "allow_private_hosts")}
    spec = {"download": {**download, "connect_timeout": settings.connect_timeout}, **extra}
    fetch.run(tmp_path / "records.tsv", tmp_path / "downloads.tsv", tmp_path / "store", spec)
    return read_table(tmp_path / "downloads.tsv", DOWNLOAD_COLUMNS).set_index("record_id")


def stored(tmp_path) -> list[Path]:
    return [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- one reading of a URL


def test_a_backslash_url_is_refused_without_a_connection(tmp_path, connections):
    """urllib.parse reads the host after the `@` (a public address), requests the one before it."""
    with FakeSites() as sites:
        sites.add("/img/x.jpg", image_reply(1))
        url = f"http://127.0.0.1:{sites.port}\\@{PUBLIC}/img/x.jpg"
        table = table_of([("slash", url)], tmp_path)
        assert sites.peak_connections == 0 and sites.hits["/img/x.jpg"] == 0
    assert table.loc["slash", "error"] == (
        f"refused URL (a backslash, which HTTP libraries read differently): http://127.0.0.1:{sites.port}"
        f"\\\\@{PUBLIC}/img/x.jpg"
    )
    assert connections == [] and stored(tmp_path) == []


REFUSED_SPELLINGS = {
    "http://127.0.0.1:80\\@example.org/": "a backslash, which HTTP libraries read differently",
    "http://example.org\\.evil.example/": "a backslash, which HTTP libraries read differently",
    "http://user:pw@example.org/x.jpg": "a user name or password before the host (user@host)",
    "http://example.org:0/x.jpg": "port '0': a number from 1 to 65535",
    "http://example.org:65536/x.jpg": "port '65536': a number from 1 to 65535",
    "http://example.org:+80/x.jpg": "port '+80': a number from 1 to 65535",
    "http://example.org:/x.jpg": "port '': a number from 1 to 65535",
    "http://[fe80::1%25eth0]/x.jpg": "an IPv6 zone in the host",
    "http://[::1/x.jpg": "not a URL: Invalid IPv6 URL",
    "http://127.1/x.jpg": "an IPv4 address in a non-standard form",
    "http://2130706433/x.jpg": "an IPv4 address in a non-standard form",
    "http://0x7f.0.0.1/x.jpg": "an IPv4 address in a non-standard form",
    "http://a..example.org/x.jpg": "an empty label in the host name",
    f"http://{'a' * 64}.example.org/x.jpg": "a label of 64 characters in the host name (at most 63)",
    "http://exa%6dple.org/x.jpg": "host label 'exa%6dple': letters, digits, hyphens and underscores only",
    "http://example.org\r.evil.example/x.jpg": "a control character or surrounding space",
    "http://example.org/x.jpg\n": "a control character or surrounding space",
    " http://example.org/x.jpg": "a control character or surrounding space",
    "ftp://example.org/x.jpg": "http and https only",
    "http:///x.jpg": "no host",
}


@pytest.mark.parametrize("url", REFUSED_SPELLINGS)
def test_spellings_http_libraries_read_otherwise_are_refused(url):
    with pytest.raises(web.FetchFailure) as refused:
        web.parse_url(url)
    assert str(refused.value).startswith(f"refused URL ({REFUSED_SPELLINGS[url]}")
    assert not refused.value.transient


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://Images.Example.org/a%20b.jpg", "images.example.org", 443),
        ("http://bücher.example/x.jpg", "xn--bcher-kva.example", 80),
        ("http://example.org.:8080/x.jpg", "example.org.", 8080),
        ("http://[2606:4700::1111]/x.jpg", "2606:4700::1111", 80),
        ("http://my_bucket.example.org/photo with space.jpg", "my_bucket.example.org", 80),
    ],
)
def test_ordinary_urls_are_read_as_requests_reads_them(url, host, port):
    target = web.parse_url(url)
    assert (target.host, target.port) == (host, port)
    prepared = urllib3_parse(requests.Request("GET", url).prepare().url)
    assert (prepared.host.strip("[]"), prepared.port or port) == (host, port)


URL_PIECES = st.sampled_from(
    ["http://", "https://", "a", "b.", "example.org", "127.0.0.1", ":", "80", "@", "\\", "/", "[", "]", "::1", "%2e"]
    + ["#", "?", ".", "-", "_", " ", "\t", "0x7f", "xn--", "ü", "%40"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(URL_PIECES, min_size=1, max_size=10).map("".join))
def test_any_url_accepted_names_the_host_and_port_requests_connects_to(url):
    """What parse_url accepts, requests (and urllib3 under it) reads as the same host and port."""
    try:
        target = web.parse_url(url)
    except web.FetchFailure:
        return
    prepared = urllib3_parse(requests.Request("GET", url).prepare().url)
    assert prepared.host is not None
    assert prepared.host.strip("[]").lower() == target.host.rstrip(".") or prepared.host.lower() == target.host
    assert (prepared.port or {"http": 80, "https": 443}[prepared.scheme]) == target.port


# --------------------------------------------------------------------------- the address connected to


@pytest.fixture
def rebinding(monkeypatch):
    """An in-process resolver whose name answers a public address first and 127.0.0.1 after
    (DNS rebinding); other names resolve as usual. Returns the count of lookups of the name."""
    real = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "images.rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = PUBLIC if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_a_rebinding_name_is_resolved_once_and_never_reaches_loopback(tmp_path, connections, rebinding):
    with FakeSites() as sites:
        sites.add("/img/x.jpg", image_reply(2))
        table = table_of([("rebind", f"http://images.rebind.test:{sites.port}/img/x.jpg")], tmp_path)
        assert sites.peak_connections == 0, "the connection went to loopback"
    # Checked and connected to: the public address the one lookup gave (the tests' guard refused it).
    assert rebinding == ["images.rebind.test"]
    assert connections == [PUBLIC]
    assert table.loc["rebind", "error"].startswith("connection failed")
    assert stored(tmp_path) == []


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("100.64.0.1", "non-global"),  # shared address space (RFC 6598)
        ("100.100.100.200", "non-global"),  # a cloud's metadata service lives here
        ("[2002:7f00:1::]", "loopback"),  # 6to4 of 127.0.0.1
        ("[::ffff:169.254.169.254]", "link-local"),
    ],
)
def test_every_address_that_is_not_global_is_refused_before_connecting(tmp_path, connections, host, kind):
    table = table_of([("inside", f"http://{host}/latest/meta-data")], tmp_path)
    shown = host.strip("[]")
    assert table.loc["inside", "error"].startswith(f"refused host {shown}: a {kind} address; to download from such")
    assert connections == []


def test_allowed_networks_let_a_mirror_in_and_nothing_else(tmp_path, connections):
    """allow_private_hosts: [127.0.0.1/32] stands for a lab's mirror: its images come, and
    neither its redirect to the metadata service nor another private address is connected to."""
    mirror = web.Settings(backoff=0.01, rate=0, retries=0, allow_private_hosts=("127.0.0.1/32",))
    with FakeSites() as sites:
        good = sites.add("/img/good.jpg", image_reply(3))
        hop = sites.add("/img/hop.jpg", redirect("http://169.254.169.254/latest/meta-data"))
        table = table_of([("good", good), ("hop", hop), ("lan", "http://10.0.0.1/x.jpg")], tmp_path, mirror)
        assert sites.hits["/img/hop.jpg"] == 1
    assert table.loc["good", "error"] == "" and len(stored(tmp_path)) == 1
    assert table.loc["hop", "error"].startswith("refused host 169.254.169.254: a link-local address")
    assert table.loc["lan", "error"].startswith("refused host 10.0.0.1: a private address")
    assert set(connections) == {"127.0.0.1"}


def test_a_network_that_is_not_one_is_named_with_its_key():
    with pytest.raises(ValueError, match=r"download.allow_private_hosts: .*'lab mirror'.* such as \[10.1.0.0/16"):
        web.Settings.from_spec({"allow_private_hosts": ["lab mirror"]})


# --------------------------------------------------------------------------- pygbif's requests


def gbif_api(sites, found):
    sites.add("/v2/species/match", match)
    sites.add(
        "/v1/occurrence/search",
        lambda q: json_reply({"offset": 0, "limit": 20, "endOfRecords": True, "count": 1, "results": found}),
    )


@pytest.mark.parametrize("kind", ["gbif", "gbif_download"])
def test_pygbif_calls_to_a_private_api_are_refused(tmp_path, connections, kind):
    with FakeSites() as sites:
        gbif_api(sites, [occurrence(1, "Amphiprion clarkii", [media(sites.url("/img/a.jpg"))])])
        spec = {"kind": kind, "api": sites.url("/")}
        spec |= {"names": ["Amphiprion clarkii"]} if kind == "gbif" else {"key": DOWNLOAD_KEY, "cache": str(tmp_path)}
        context = sources.Context(kind, client=web.Client(REFUSING))
        with pytest.raises(ValueError, match=r"failed: refused host 127.0.0.1: a loopback address"):
            sources.list_source(kind, spec, context)
        assert sites.peak_connections == 0 and not sites.hits
    assert connections == []


def test_pygbif_follows_no_redirect_from_a_permitted_api_to_a_private_address(connections):
    """The permitted api (loopback, allowed by network as a lab's mirror would be) answers, then
    answers with a redirect to the metadata service: pygbif's request is refused before it
    connects there."""
    mirror = web.Settings(backoff=0.01, rate=0, retries=0, allow_private_hosts=("127.0.0.1/32",))
    with FakeSites() as sites:
        gbif_api(sites, [occurrence(7, "Amphiprion clarkii", [media("https://img.example.org/7.jpg")])])
        sites.add("/v2/species/match", match, redirect("http://169.254.169.254/latest/meta-data"))
        spec = {"kind": "gbif", "api": sites.url("/"), "names": ["Amphiprion clarkii"]}
        context = sources.Context("gbif", client=web.Client(mirror))
        records, _ = sources.list_source("gbif", spec, context)
        assert list(records["record_id"]) == ["gbif:7-1"]
        with pytest.raises(ValueError, match=r"failed: refused host 169.254.169.254: a link-local address"):
            sources.list_source("gbif", spec, context)
        assert sites.hits["/v2/species/match"] == 2
    assert set(connections) == {"127.0.0.1"}


# --------------------------------------------------------------------------- one record, one row


def test_urls_that_stopped_the_fetch_are_rows_and_the_rest_are_stored(tmp_path):
    with FakeSites() as sites:
        good = sites.add("/img/good.jpg", image_reply(4))
        label = "a" * 64
        records = [
            ("good", good),
            ("bracket", "http://[::1/x.jpg"),
            ("label", f"http://{label}.example.org/x.jpg"),
            ("port", f"http://127.0.0.1:{sites.port}0000/x.jpg"),
            ("file-bracket", "file://[::1/x.jpg"),
        ]
        table = table_of(records, tmp_path, LOOPBACK)
    assert table.loc["good", "error"] == "" and len(stored(tmp_path)) == 1
    assert table.loc["bracket", "error"] == "refused URL (not a URL: Invalid IPv6 URL): http://[::1/x.jpg"
    assert table.loc["label", "error"] == (
        f"refused URL (a label of 64 characters in the host name (at most 63)): http://{label}.example.org/x.jpg"
    )
    assert table.loc["port", "error"].startswith("refused URL (")
    assert table.loc["file-bracket", "error"].startswith("refused file URL (Invalid IPv6 URL)")


# --------------------------------------------------------------------------- point 6


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height: a decompression bomb by its header."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # the signature, then the chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return bytes(data)


def test_a_bomb_its_header_declares_is_refused_at_download_by_the_clean_limit(tmp_path):
    with FakeSites() as sites:
        big = sites.add("/img/bomb.png", Reply(body=png_declaring(20_000, 20_000), content_type="image/png"))
        good = sites.add("/img/good.jpg", image_reply(5))
        table = table_of([("bomb", big), ("good", good)], tmp_path, LOOPBACK)
        # clean.max_pixels, as the fetch rule passes it: a 64x48 photo is over 3000 pixels.
        (tmp_path / "small").mkdir()
        small = table_of([("good", good)], tmp_path / "small", LOOPBACK, max_pixels=3000)
    assert table.loc["good", "error"] == "" and len(stored(tmp_path)) == 1, "the bomb was stored"
    assert table.loc["bomb", "error"] == (
        f"decompression bomb: 20000x20000 = 400,000,000 pixels, over clean.max_pixels ({store.MAX_PIXELS:,})"
    )
    assert small.loc["good", "error"] == "decompression bomb: 64x48 = 3,072 pixels, over clean.max_pixels (3,000)"


class Payload:
    """Pickled by reference: loading it would import and run code."""

    def __reduce__(self):
        return (os.getcwd, ())


def load_backbone(path):
    registry.load_backbone_state(registry.backbone_resnet18(), path)


def load_clip_pretraining(path):
    clip_models.from_pretraining(path)


def load_open_clip_folder(path):
    (path.parent / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    clip_models.load_backbone({"source": "open_clip", "model": f"local-dir:{path.parent}"}, None, False)


@pytest.mark.parametrize(
    ("loader", "name"),
    [
        (load_backbone, "backbone.pt"),
        (load_clip_pretraining, "clip.pt"),
        (load_open_clip_folder, "open_clip_pytorch_model.bin"),
    ],
)
def test_every_refused_weights_file_gets_the_projects_message(tmp_path, loader, name):
    path = tmp_path / "folder" / name
    path.parent.mkdir()
    torch.save({"model": Payload(), "architecture": {}}, path)
    with pytest.raises(ValueError) as refused:
        loader(path)
    message = str(refused.value)
    shown = path.parent if loader is load_open_clip_folder else path
    assert message.startswith(f"{shown}: refused: this file holds Python objects beyond tensors and plain values")
    assert "weights_only" not in message and ("trust" in message or "again here" in message)


def test_two_fetches_into_one_store_with_different_tables_take_turns_and_fetch_once(tmp_path):
    spec = {"download": {"workers": 8, "per_host": 3, "rate": 0, "backoff": 0.01, "allow_private_hosts": True}}
    with FakeSites(latency=0.2) as sites:
        rows = [
            {"record_id": f"web:{i}", "media_url": sites.add(f"/img/{i}.jpg", image_reply(i)), "license": "CC0-1.0"}
            for i in range(24)
        ]
        pd.DataFrame(rows).reindex(columns=RECORD_COLUMNS, fill_value="").to_csv(
            tmp_path / "records.tsv", sep="\t", index=False
        )
        commands = []
        for out in ("first.tsv", "second.tsv"):
            command = fetch_command(tmp_path, spec)
            command[command.index("--out") + 1] = str(tmp_path / out)
            commands.append(command)
        codes, logs = fetches_that_wait(tmp_path, commands)
        hits, peak = dict(sites.hits), sites.peak_connections
    assert codes == [0, 0], logs
    assert all("another fetch holds the records" in log for log in logs), logs
    assert set(hits.values()) == {1} and len(hits) == 24, "an image was fetched twice"
    assert peak <= 3
    tables = [read_table(tmp_path / out, DOWNLOAD_COLUMNS) for out in ("first.tsv", "second.tsv")]
    assert tables[0]["error"].eq("").all() and tables[0].equals(tables[1])
