"""Downloader throughput against the study's approach (one urlretrieve after another).

Every image host is a loopback server that adds `--latency` seconds to each request, as
a distant server would. Scenarios:
  one_host      all images on one host; the downloader may open 16 connections to it
  four_hosts    the same images spread over four hosts (the study's came from iNaturalist,
                FishBase, FishPix and museum servers), 16 connections per host at most
  faults        one host that answers 10 % of requests with a transient fault (503, 500,
                429 + Retry-After, a body cut short): files lost and corrupt files are counted
Results go to bench/results/downloader.json (and a table on stdout).

    python bench/downloader.py            # about a minute
"""

import argparse
import hashlib
import json
import multiprocessing
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT / "tests")]

from fake_sites import FakeSites, Reply, jpeg  # noqa: E402

from fishid import web  # noqa: E402
from fishid.download import fetch  # noqa: E402

IMAGE_SIZE = (320, 240)


def _host_process(index, hosts, count, latency, fault_rate, connection):
    """One image host, in a process of its own so that it does not share the benchmark's GIL."""
    with FakeSites(latency=latency, fault_rate=fault_rate, seed=7 + index) as sites:
        for i in range(index, count, hosts):
            sites.add(f"/img/{i}.jpg", Reply(body=jpeg(i, IMAGE_SIZE), content_type="image/jpeg"))
        connection.send(sites.port)
        connection.recv()  # until the benchmark is done with this host
        connection.send(
            {"peak": sites.peak_connections, "requests": sum(sites.hits.values())} | {"faults": sites.faults_served}
        )


@contextmanager
def image_hosts(hosts, count, latency, fault_rate=0.0):
    """Start `hosts` servers holding `count` distinct JPEGs dealt round-robin; yield (records, stats)."""
    pipes, processes = [], []
    for index in range(hosts):
        ours, theirs = multiprocessing.Pipe()
        process = multiprocessing.Process(
            target=_host_process, args=(index, hosts, count, latency, fault_rate, theirs), daemon=True
        )
        process.start()
        pipes.append(ours)
        processes.append(process)
    ports = [pipe.recv() for pipe in pipes]
    urls = [f"http://127.0.0.1:{ports[i % hosts]}/img/{i}.jpg" for i in range(count)]
    records = pd.DataFrame({"record_id": [f"bench:{i}" for i in range(count)], "media_url": urls, "license": "CC0-1.0"})
    stats = {}
    try:
        yield records, stats
    finally:
        for pipe in pipes:
            pipe.send("stop")
        collected = [pipe.recv() for pipe in pipes]
        stats.update(
            peak=max(c["peak"] for c in collected),
            requests=sum(c["requests"] for c in collected),
            faults=sum(c["faults"] for c in collected),
        )
        for process in processes:
            process.join()


def sequential_urlretrieve(records, folder):
    """The study's way: one urllib.request.urlretrieve after another."""
    started = time.perf_counter()
    for i, url in enumerate(records["media_url"]):
        urllib.request.urlretrieve(url, folder / f"{i}.jpg")
    return time.perf_counter() - started


def downloader(records, folder, settings):
    started = time.perf_counter()
    table = fetch.fetch_all(records, folder / "store", folder / "journal", settings)
    return time.perf_counter() - started, table


def corrupt_files(store):
    bad = 0
    for path in (p for p in store.rglob("*") if p.is_file()):
        try:
            with Image.open(path) as image:
                image.load()
            bad += hashlib.sha256(path.read_bytes()).hexdigest() != path.stem
        except OSError:
            bad += 1
    return bad


def throughput(hosts, count, latency, sequential_count, settings):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with image_hosts(hosts, count, latency) as (records, stats):
            (tmp / "seq").mkdir()
            seq_seconds = sequential_urlretrieve(records.head(sequential_count), tmp / "seq")
            ours_seconds, table = downloader(records, tmp, settings)
        return {
            "hosts": hosts,
            "images": count,
            "latency_s": latency,
            "sequential_images_per_s": round(sequential_count / seq_seconds, 2),
            "downloader_images_per_s": round(count / ours_seconds, 2),
            "speedup": round((count / ours_seconds) / (sequential_count / seq_seconds), 2),
            "downloader_errors": int((table["error"] != "").sum()),
            "peak_connections_per_host": stats["peak"],
        }


def with_faults(count, latency, rate, settings):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with image_hosts(1, count, latency, rate) as (records, stats):
            seconds, table = downloader(records, tmp, settings)
        expected = {hashlib.sha256(jpeg(i, IMAGE_SIZE)).hexdigest() for i in range(count)}
        return {
            "images": count,
            "fault_rate": rate,
            "requests": stats["requests"],
            "faults_injected": stats["faults"],
            "files_lost": int((table["error"] != "").sum()) + len(expected - set(table["sha256"])),
            "files_corrupt": corrupt_files(tmp / "store"),
            "images_per_s": round(count / seconds, 2),
            "peak_connections_per_host": stats["peak"],
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--sequential-images", type=int, default=60, help="images the slow baseline fetches")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "downloader.json"))
    args = parser.parse_args()

    polite = {"per_host": 16, "rate": 0, "backoff": 0.05, "retries": 6, "read_timeout": 10}
    results = {
        "one_host": throughput(
            1, args.images, args.latency, args.sequential_images, web.Settings(workers=16, **polite)
        ),
        "four_hosts": throughput(
            4, args.images, args.latency, args.sequential_images, web.Settings(workers=64, **polite)
        ),
        "faults": with_faults(args.images, args.latency, 0.10, web.Settings(workers=16, **polite)),
    }
    results["command"] = "python bench/downloader.py " + " ".join(sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for name, values in results.items():
        print(name, values)


if __name__ == "__main__":
    main()
