"""The downloader against a loopback server that injects every fault of the issue."""

import hashlib
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pandas as pd
import pytest
import requests
from fake_sites import FakeSites, Reply, html_reply, image_reply, jpeg, redirect
from PIL import Image

from fishid import web
from fishid.download import fetch

# The fake sites serve on 127.0.0.1: a loopback host, refused unless allowed.
FAST = web.Settings(
    backoff=0.01,
    connect_timeout=2,
    read_timeout=0.5,
    retries=3,
    rate=0,
    per_host=4,
    workers=8,
    allow_private_hosts=True,
)


def records(urls: dict, licence="CC-BY-4.0") -> pd.DataFrame:
    return pd.DataFrame({"record_id": list(urls), "media_url": list(urls.values()), "license": licence})


def assert_store_holds_only_good_images(store_root):
    files = [p for p in store_root.rglob("*") if p.is_file()]
    for path in files:
        assert not path.name.startswith("."), f"temporary file left in the store: {path}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
        with Image.open(path) as image:
            image.load()
    return files


class RecordingSleep:
    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)
        time.sleep(seconds)


def test_every_transient_fault_is_retried_to_success(tmp_path):
    with FakeSites() as sites:
        urls = {
            "503": sites.add("/img/a", Reply(status=503), image_reply(1)),
            "500": sites.add("/img/b", Reply(status=500), Reply(status=500), image_reply(2)),
            "429": sites.add("/img/c", Reply(status=429, headers={"Retry-After": "1"}), image_reply(3)),
            "timeout": sites.add("/img/d", Reply(delay=1.5, body=jpeg(4), content_type="image/jpeg"), image_reply(4)),
            "cut": sites.add("/img/e", Reply(body=jpeg(5), content_type="image/jpeg", cut_to=200), image_reply(5)),
            "redirected": sites.add("/img/f", redirect("/img/f2")),
        }
        sites.add("/img/f2", image_reply(6))
        sleep = RecordingSleep()
        table = fetch.fetch_all(
            records(urls), tmp_path / "store", tmp_path / "journal", FAST, client=web.Client(FAST, sleep=sleep)
        )
        hits = dict(sites.hits)
    assert (table["error"] == "").all(), table[["record_id", "error"]]
    assert list(table["http_status"]) == ["200"] * 6
    assert hits["/img/b"] == 3 and hits["/img/c"] == 2 and hits["/img/d"] == 2 and hits["/img/e"] == 2
    # Retry-After: 1 was honoured as asked; other retries backed off briefly (backoff 0.01 s).
    assert 1.0 in sleep.waits and all(w < 0.1 for w in sleep.waits if w != 1.0)
    expected = {hashlib.sha256(jpeg(i)).hexdigest() for i in range(1, 7)}
    assert set(table["sha256"]) == expected
    assert len(assert_store_holds_only_good_images(tmp_path / "store")) == 6


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert web.retry_after_seconds(header, now=now.timestamp()) == pytest.approx(30)
    assert web.retry_after_seconds("7") == 7
    assert web.retry_after_seconds(format_datetime(now, usegmt=True), now=now.timestamp() + 60) == 0
    assert web.retry_after_seconds("soon") is None


def test_http_date_retry_after_is_waited_for(tmp_path):
    # The date is 30 s ahead, far from any other wait the client makes (backoff 0.01 s); the
    # sleep only records what the client asks for, so the test takes no 30 s.
    waits = []
    with FakeSites() as sites:
        sent = time.time()
        later = format_datetime(datetime.fromtimestamp(sent, UTC) + timedelta(seconds=30), usegmt=True)
        url = sites.add("/img/a", Reply(status=503, headers={"Retry-After": later}), image_reply(1))
        table = fetch.fetch_all(
            records({"a": url}), tmp_path / "store", tmp_path / "j", FAST, client=web.Client(FAST, sleep=waits.append)
        )
        done = time.time()
    assert table["error"][0] == ""
    # An HTTP date names a whole second (up to 1 s before sent + 30), and the client reads it
    # some time between sending and finishing: both bounds hold whatever the clock's fraction.
    assert len(waits) == 1 and 29 - (done - sent) <= waits[0] <= 30


def http_error(status, retry_after=None, url="https://api.example.org/v1/x"):
    """What a third-party client's raise_for_status raises."""
    response = requests.Response()
    response.status_code, response.url = status, url
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


def failing(*errors, then="answer"):
    """A call that raises `errors` one by one, then returns `then`."""
    remaining = list(errors)

    def call():
        if remaining:
            raise remaining.pop(0)
        return then

    return call


def test_a_third_party_request_is_retried_by_the_clients_rules():
    waits = []
    client = web.Client(web.Settings(backoff=1.0, retries=4, max_wait=30), sleep=waits.append)
    call = failing(
        http_error(420), http_error(429, retry_after="7"), http_error(503, retry_after="3600"), requests.ReadTimeout()
    )
    assert client.retry(call) == "answer"
    # 420 backs off 1 s with jitter; Retry-After 7 is honoured, 3600 capped at max_wait; a timeout backs off 8 s.
    assert 1.0 <= waits[0] <= 1.25 and waits[1:3] == [7, 30] and 8.0 <= waits[3] <= 10.0


def test_a_third_party_request_fails_as_a_get_fails():
    waits = []
    client = web.Client(web.Settings(backoff=0.5, retries=2), sleep=waits.append)
    with pytest.raises(web.FetchFailure, match=r"^HTTP 404 from https://api.example.org/v1/x$") as missing:
        client.retry(failing(http_error(404)))
    assert not missing.value.transient and waits == [], "a permanent failure is not retried"
    with pytest.raises(web.FetchFailure, match=r"^connection failed: .* \(gave up after 3 attempts\)$"):
        client.retry(failing(*[requests.ConnectionError("refused")] * 3))
    assert len(waits) == 2


def test_every_permanent_fault_leaves_a_row_with_its_error_and_nothing_in_the_store(tmp_path):
    settings = web.Settings(**{**FAST.__dict__, "max_bytes": 50_000, "max_redirects": 3})
    with FakeSites() as sites:
        urls = {
            "good": sites.add("/img/good", image_reply(1)),
            "404": sites.add("/img/missing-on-purpose", html_reply("<html>gone</html>", 404)),
            "html": sites.add("/img/html", html_reply("<html><body>Error</body></html>")),
            "html-as-jpeg": sites.add(
                "/img/liar", Reply(body=b"<!DOCTYPE html><html>oops</html>", content_type="image/jpeg")
            ),
            "oversize": sites.add("/img/big", Reply(body=b"\xff\xd8\xff" + b"\0" * 80_000, content_type="image/jpeg")),
            "loop": sites.add("/img/loop-a", redirect("/img/loop-b")),
            "ftp": sites.add("/img/to-ftp", redirect("ftp://127.0.0.1/x.jpg")),
            "always-503": sites.add("/img/down", Reply(status=503)),
        }
        sites.add("/img/loop-b", redirect("/img/loop-a"))
        table = fetch.fetch_all(records(urls), tmp_path / "store", tmp_path / "journal", settings)
        hits = dict(sites.hits)
    errors = dict(zip(table["record_id"], table["error"]))
    status = dict(zip(table["record_id"], table["http_status"]))
    assert errors["good"] == ""
    assert errors["404"] == "HTTP 404" and status["404"] == "404"
    assert errors["html"] == "not an image: Content-Type text/html"
    # Described, never quoted: a body may hold anything (a local file's secrets, escapes).
    assert errors["html-as-jpeg"] == "not an image: 32 bytes, HTML or XML" and "DOCTYPE" not in errors["html-as-jpeg"]
    assert errors["oversize"].startswith("too large")
    assert errors["loop"].startswith("more than 3 redirects")
    assert errors["ftp"].startswith("refused URL (http and https only): ftp://")
    assert errors["always-503"] == "HTTP 503 (gave up after 4 attempts)" and hits["/img/down"] == 4
    assert hits["/img/missing-on-purpose"] == 1, "a permanent failure is not retried"
    assert table.loc[table["error"] != "", "sha256"].eq("").all()
    assert len(assert_store_holds_only_good_images(tmp_path / "store")) == 1


def test_requests_name_the_project(tmp_path):
    with FakeSites() as sites:
        url = sites.add("/img/a", image_reply(1))
        fetch.fetch_all(records({"a": url}), tmp_path / "store", tmp_path / "j", FAST)
        agents = set(sites.user_agents)
    assert len(agents) == 1 and next(iter(agents)).startswith("fishid/")


def test_connections_per_host_are_capped(tmp_path):
    settings = web.Settings(**{**FAST.__dict__, "per_host": 3, "workers": 12})
    with FakeSites(latency=0.05) as sites:
        urls = {f"r{i}": sites.add(f"/img/{i}", image_reply(i)) for i in range(24)}
        table = fetch.fetch_all(records(urls), tmp_path / "store", tmp_path / "j", settings)
        peak = sites.peak_connections
    assert (table["error"] == "").all()
    # Both limits hold on the server's side: never more than 3 open connections, and 3 were used.
    assert peak == 3


def test_request_rate_per_host_is_limited(tmp_path):
    # 4 hosts (a server each: host:port differs) x 6 requests, interleaved, at most 10 a second
    # per host; workers enough that none waits for a thread. A long read timeout: no retries.
    settings = web.Settings(**{**FAST.__dict__, "rate": 10.0, "workers": 24, "per_host": 8, "read_timeout": 10})
    arrived = {host: [] for host in range(4)}  # when each request reached its server

    def noted(host, seed):
        def reply(query):
            arrived[host].append(time.monotonic())
            return image_reply(seed)

        return reply

    with FakeSites() as a, FakeSites() as b, FakeSites() as c, FakeSites() as d:
        servers = [a, b, c, d]
        urls = {f"h{h}r{i}": servers[h].add(f"/img/{i}", noted(h, 6 * h + i)) for i in range(6) for h in arrived}
        table = fetch.fetch_all(records(urls), tmp_path / "store", tmp_path / "j", settings)
    assert (table["error"] == "").all() and all(len(times) == 6 for times in arrived.values())
    # Each host's 6 requests are 5 intervals (0.5 s) apart at least, at the client; the margin
    # is the first request's extra latency (a new connection) on a loaded machine.
    for times in arrived.values():
        assert max(times) - min(times) >= 0.35, sorted(t - min(times) for t in times)
    # The limit is per host: one pacer for all would space the 24 requests over 2.3 s; paced per
    # host they all arrive within about 0.5 s, and a slow machine's overhead adds far less than 0.8 s.
    every = [t for times in arrived.values() for t in times]
    assert max(every) - min(every) <= 1.5, {
        h: [round(t - min(every), 3) for t in times] for h, times in arrived.items()
    }


def test_licence_policy_refuses_before_fetching(tmp_path):
    with FakeSites() as sites:
        urls = {"nd": sites.add("/img/nd", image_reply(1)), "ok": sites.add("/img/ok", image_reply(2))}
        table_records = records(urls)
        table_records["license"] = ["CC-BY-ND-4.0", "http://creativecommons.org/licenses/by-nc/4.0/"]
        table = fetch.fetch_all(table_records, tmp_path / "store", tmp_path / "j", FAST, policy={})
        hits = dict(sites.hits)
    assert list(table["error"]) == ["licence not allowed: CC-BY-ND-4.0", ""]
    assert "/img/nd" not in hits


def test_offline_run_refuses_to_download(tmp_path):
    records_path = tmp_path / "records.tsv"
    table = records({"a": "https://example.org/a.jpg"})
    for column in fetch.RECORD_COLUMNS:
        table[column] = table.get(column, "")
    table.to_csv(records_path, sep="\t", index=False)
    with pytest.raises(ValueError, match="offline: true"):
        fetch.run(records_path, tmp_path / "d.tsv", tmp_path / "store", offline=True)
    assert not (tmp_path / "d.tsv").exists()


def test_a_rerun_fetches_only_what_failed_transiently(tmp_path):
    with FakeSites() as sites:
        urls = {"ok": sites.add("/img/ok", image_reply(1)), "flaky": sites.add("/img/flaky", Reply(status=503))}
        settings = web.Settings(**{**FAST.__dict__, "retries": 0})
        first = fetch.fetch_all(records(urls), tmp_path / "store", tmp_path / "j", settings)
        assert first["error"][1] == "HTTP 503 (gave up after 1 attempts)"
        sites.add("/img/flaky", image_reply(2))
        second = fetch.fetch_all(records(urls), tmp_path / "store", tmp_path / "j", settings)
        hits = dict(sites.hits)
    assert (second["error"] == "").all()
    assert hits["/img/ok"] == 1
