"""The review app and the report on a big project: how long each page of `fishid review`
takes over real HTTP on loopback, and how big the report is.

Each route is asked of a fresh server (`fishid review --root PROJECT --port 0`, started from
this checkout's code): the first answer is the cold one (the server has read nothing yet),
then --samples warm ones (median and max). Routes: the Dataset page (first, middle and last
page, a species filter), its CSV and JSON exports, a photo's page, the queue (flagged and
all, first and far in), the queues, pending decisions, the models and a model's page
(mistakes and map), Predict, a stored file, /go; the plan: its first answer, the seconds until
an answer shows the plan (asked again while the page says it is being made, as its refresh
does), and answers once shown; with --decide also a decision written from the queue and one
from the photo's page (which shows the plan), each undone (the project's decision files are
restored byte for byte after).
The report: results/report/index.html's size, every src/href that is not data:, #, a web
link or mailto (none, for a self-contained page), and its biggest parts (embedded images,
table rows).

A run is recorded under --stage (e.g. "before" and "after" a change); the stages already
in bench/results/{name}.json are kept, so one table shows both.

    python bench/review_scale.py /tmp/h-scale-work/photos20000/project --configfile config/run.yaml --stage before
"""

import argparse
import base64
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "workflow"))

from output import RESULTS, write_results  # noqa: E402

from fishid.tables import read_table  # noqa: E402

LIMIT_SECONDS = 2.0
REPORT_LIMIT_MB = 10.0
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# What the Plan page says while the plan is being made (fishid.review.planner).
PLAN_MADE_LATER = 'id="plan-computing"'
PLAN_ROUTES = ("plan (dry run)", "plan, until it is shown")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def ask(url: str, data: dict | None = None, text: bool = False) -> tuple:
    """(status, bytes, seconds to the whole answer), and its text if `text`."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    started = time.perf_counter()
    try:
        with OPENER.open(urllib.request.Request(url, data=body), timeout=600) as answer:
            read = answer.read()
            status = answer.status
    except urllib.error.HTTPError as answer:
        read = answer.read()
        status = answer.code
    seconds = time.perf_counter() - started
    return (status, len(read), seconds, read.decode()) if text else (status, len(read), seconds)


class Server:
    """`fishid review` in the project, from this checkout's code, on a free port."""

    def __init__(self, project: Path, configfiles=()):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
        cli = str(ROOT / "workflow/fishid_cli.py")
        command = [sys.executable, cli, "review", "--root", str(project), "--port", "0"]
        command += ["--configfile", *configfiles] if configfiles else []
        self.process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"fishid review printed {line!r}")
        self.url = match.group(1)

    def csrf(self, path: str) -> str:
        with OPENER.open(self.url + path, timeout=600) as answer:
            return CSRF.search(answer.read().decode()).group(1)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def examples(project: Path) -> dict:
    """What the routes name: a kept photo, a species, a flagged photo, a model, a stored file."""
    clean = read_table(project / "results/clean/images.tsv")
    kept = clean[clean["kept"] == "True"]
    issues_path = project / "results/review/label_issues.tsv"
    issues = read_table(issues_path) if issues_path.exists() else None
    flagged = issues[issues["flagged"] == "True"] if issues is not None else None
    models = sorted(p.parent.name for p in (project / "results/models").glob("*/meta.json"))
    species = sorted(set(kept["taxon"]) - {""})
    stored = next(iter(sorted((project / "resources/images").glob("*/*.jpg"))), None)
    return {
        "photos": len(clean),
        "kept": len(kept),
        "species": len(species),
        "sha256": kept["sha256"].iloc[len(kept) // 2],
        "a_species": species[len(species) // 2],
        "flagged": len(flagged) if flagged is not None else 0,
        "ranked": len(issues) if issues is not None else 0,
        "flagged_sha256": flagged["sha256"].iloc[0] if flagged is not None and len(flagged) else None,
        "model": models[0] if models else None,
        "stored": str(stored.relative_to(project / "resources/images")) if stored else None,
        "maps": sorted(p.stem for p in (project / "results/review/embedding_map").glob("*.json")),
    }


def routes(found: dict) -> list[tuple[str, str]]:
    pages = max(1, -(-found["photos"] // 200))
    quoted = urllib.parse.quote(found["a_species"])
    listed = [
        ("dataset, page 1", "/"),
        ("dataset, middle page", f"/?page={pages // 2}"),
        ("dataset, last page", f"/?page={pages}"),
        ("dataset, one species", f"/?species={quoted}"),
        ("dataset, kept, page 2", "/?status=kept&page=2"),
        ("export CSV (all)", "/export.csv"),
        ("export JSON (all)", "/export.json"),
        ("export CSV (one species)", f"/export.csv?species={quoted}"),
        ("photo page", f"/image/{found['sha256']}"),
        ("go (search a hash prefix)", f"/go?q={found['sha256'][:10]}"),
        ("queue, flagged, first", "/queue?scope=flagged"),
        ("queue, all, far in", f"/queue?scope=all&at={max(found['ranked'] - 1, 0)}"),
        ("queues", "/queues"),
        ("pending", "/pending"),
        ("models", "/models"),
        ("predict (form)", "/predict"),
    ]
    if found["model"]:
        mapped = "with" if found["model"] in found["maps"] else "no"
        listed.append((f"model page ({mapped} map)", f"/models/{found['model']}"))
    if found["stored"]:
        listed.append(("stored photo file", f"/file/store/{found['stored']}"))
    return listed


def timed_route(project: Path, path: str, samples: int, configfiles=()) -> dict:
    server = Server(project, configfiles)
    try:
        status, size, cold = ask(server.url + path)
        warm = [ask(server.url + path)[2] for _ in range(samples)]
    finally:
        server.close()
    return {
        "path": path,
        "status": status,
        "bytes": size,
        "cold_s": round(cold, 3),
        "warm_median_s": round(statistics.median(warm), 3) if warm else None,
        "warm_max_s": round(max(warm), 3) if warm else None,
    }


def timed_plan(project: Path, samples: int, configfiles=()) -> list[dict]:
    """The Plan page of a fresh server: its first answer, then until an answer shows the plan
    (the seconds from the first request), then `samples` more answers."""
    server = Server(project, configfiles)
    answers = []
    try:
        started = time.perf_counter()
        while not answers or PLAN_MADE_LATER in answers[-1][3]:
            answers.append(ask(server.url + "/plan", text=True))
        shown = time.perf_counter() - started
        warm = [ask(server.url + "/plan")[2] for _ in range(samples)]
    finally:
        server.close()
    status, size, first, _ = answers[0]
    return [
        {
            "route": PLAN_ROUTES[0],
            "path": "/plan",
            "status": status,
            "bytes": answers[-1][1],
            "cold_s": round(first, 3),
            "warm_median_s": round(statistics.median(warm), 3) if warm else None,
            "warm_max_s": round(max(warm), 3) if warm else None,
        },
        {
            "route": PLAN_ROUTES[1],
            "path": "/plan",
            "status": answers[-1][0],
            "bytes": answers[-1][1],
            "cold_s": round(shown, 3),
            "answers": len(answers),
            "warm_median_s": None,
            "warm_max_s": None,
        },
    ]


def timed_decision(project: Path, found: dict, samples: int, configfiles=()) -> list[dict]:
    """A decision written from the queue (303 on to the next photo) and undone, `samples`
    times; the decision files are put back as they were whatever happens."""
    sha = found["flagged_sha256"] or found["sha256"]
    saved = {p: p.read_bytes() for p in (project / "config").glob("*.tsv")}
    server = Server(project, configfiles)
    rows = {"decide (exclude, from the queue)": [], "decide (exclude, from the photo page)": [], "undo": []}
    try:
        for _ in range(samples + 1):
            csrf = server.csrf("/queue?scope=flagged")
            form = {"csrf": csrf, "sha256": sha, "action": "exclude", "reason": "bench"}
            for name, queue in (("from the queue", {"queue": "flagged", "at": "0"}), ("from the photo page", {})):
                rows[f"decide (exclude, {name})"].append(ask(server.url + "/decide", {**form, **queue}))
                rows["undo"].append(ask(server.url + "/undo", {"csrf": csrf, "kind": "exclude", "sha256": sha}))
    finally:
        server.close()
        for path, data in saved.items():
            path.write_bytes(data)
    out = []
    for name, answers in rows.items():
        warm = [s for _, _, s in answers[1:]]
        out.append(
            {
                "route": name,
                "path": "/undo" if name == "undo" else "/decide",
                "status": answers[0][0],
                "bytes": answers[0][1],
                "cold_s": round(answers[0][2], 3),
                "warm_median_s": round(statistics.median(warm), 3) if warm else None,
                "warm_max_s": round(max(warm), 3) if warm else None,
            }
        )
    return out


DATA_URI = re.compile(r'src="data:image/(\w+);base64,([^"]*)"')
LINK = re.compile(r'\b(?:src|href)="([^"]*)"')


def report_figures(project: Path) -> dict:
    path = project / "results/report/index.html"
    if not path.exists():
        return {"present": False}
    text = path.read_text()
    external = sorted(
        {
            v
            for v in LINK.findall(text)
            if not v.startswith(("data:", "#", "http://", "https://", "mailto:")) and v.strip()
        }
    )
    images = []
    for kind, data in DATA_URI.findall(text):
        raw = base64.b64decode(data)
        width, height = Image.open(io.BytesIO(raw)).size
        images.append({"kind": kind, "bytes_in_page": len(data), "width": width, "height": height})
    images.sort(key=lambda i: -i["bytes_in_page"])
    tables = re.findall(r"<table.*?</table>", text, flags=re.DOTALL)
    return {
        "present": True,
        "bytes": path.stat().st_size,
        "mb": round(path.stat().st_size / 1e6, 2),
        "external_links": external,
        "embedded_images": len(images),
        "embedded_image_bytes": sum(i["bytes_in_page"] for i in images),
        "largest_images": images[:8],
        "tables": len(tables),
        "table_rows": sorted((t.count("<tr") for t in tables), reverse=True)[:8],
        "table_bytes": sum(len(t) for t in tables),
    }


def markdown(results: dict) -> str:
    stages = list(results["stages"])
    found = results["project_facts"]
    lines = [
        f"# Review app and report at {found['photos']:,} photos, {found['species']} species",
        "",
        f"`{results['command']}`; project {results['project']}; {results['machine']}.",
        f"{found['kept']:,} kept photos, {found['ranked']:,} ranked in the label-issue queue "
        f"({found['flagged']:,} flagged). "
        f"Seconds over HTTP on loopback to the whole answer; cold: the first request to a fresh server, "
        f"warm: median (max) of {results['samples']} more. Limit: {LIMIT_SECONDS} s a page.",
        "",
        "| page | " + " | ".join(f"{s} cold | {s} warm" for s in stages) + " | size (last stage) |",
        "| --- |" + " ---: | ---: |" * len(stages) + " ---: |",
    ]
    names = list(dict.fromkeys(r["route"] for s in stages for r in results["stages"][s]["routes"]))
    for name in names:
        cells = []
        last = None
        for stage in stages:
            row = next((r for r in results["stages"][stage]["routes"] if r["route"] == name), None)
            if row is None:
                cells += ["", ""]
                continue
            last = row
            over = " **over**" if row["cold_s"] > LIMIT_SECONDS else ""
            warm = f"{row['warm_median_s']:.2f} ({row['warm_max_s']:.2f})" if row["warm_median_s"] is not None else ""
            warm += " **over**" if row["warm_max_s"] and row["warm_max_s"] > LIMIT_SECONDS else ""
            cells += [f"{row['cold_s']:.2f}{over}", warm]
        size = f"{last['bytes'] / 1e3:,.0f} kB (HTTP {last['status']})" if last else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {size} |")
    lines += ["", "| report | " + " | ".join(stages) + " |", "| --- |" + " ---: |" * len(stages)]
    reports = [results["stages"][s]["report"] for s in stages]
    if all(r.get("present") for r in reports):
        rows = [
            ("size (MB)", lambda r: f"{r['mb']:.2f}" + (" **over**" if r["mb"] > REPORT_LIMIT_MB else "")),
            ("links to files (not self-contained)", lambda r: str(len(r["external_links"]))),
            ("embedded images", lambda r: str(r["embedded_images"])),
            ("embedded image MB", lambda r: f"{r['embedded_image_bytes'] / 1e6:.2f}"),
            (
                "largest image (px)",
                lambda r: (
                    f"{r['largest_images'][0]['width']}×{r['largest_images'][0]['height']}"
                    if r["largest_images"]
                    else ""
                ),
            ),
            ("tables / rows of the longest", lambda r: f"{r['tables']} / {max(r['table_rows'], default=0)}"),
            ("table MB", lambda r: f"{r['table_bytes'] / 1e6:.2f}"),
        ]
        for label, show in rows:
            lines.append(f"| {label} | " + " | ".join(show(r) for r in reports) + " |")
    for stage in stages:
        note = results["stages"][stage].get("note")
        if note:
            lines += ["", f"**{stage}**: {note}"]
    return "\n".join(lines) + "\n"


def show(*rows):
    for row in rows:
        warm = f"{row['warm_median_s']} s warm" if row["warm_median_s"] is not None else "no warm answer"
        print(f"{row['route']}: {row['cold_s']:.2f} s cold, {warm}, {row['bytes']:,} bytes", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--configfile", nargs="*", default=[], help="as the run used (fishid review --configfile)")
    parser.add_argument("--stage", default="now", help="the name this run is recorded under")
    parser.add_argument("--note", default="", help="what the stage's code is (shown under the table)")
    parser.add_argument("--samples", type=int, default=3, help="warm requests per route")
    parser.add_argument("--decide", action="store_true", help="time a decision and its undo too")
    parser.add_argument("--only", nargs="*", default=None, help="route names (substrings) to time")
    parser.add_argument("--name", default="review_scale")
    args = parser.parse_args()
    project = args.project.resolve()
    found = examples(project)
    rows = []
    for name, path in routes(found):
        if args.only and not any(o in name for o in args.only):
            continue
        rows.append({"route": name, **timed_route(project, path, args.samples, args.configfile)})
        show(rows[-1])
    if not args.only or any(o in name for o in args.only for name in PLAN_ROUTES):
        rows += timed_plan(project, args.samples, args.configfile)
        show(*rows[-2:])
    if args.decide:
        rows += timed_decision(project, found, args.samples, args.configfile)
    previous = RESULTS / f"{args.name}.json"
    results = json.loads(previous.read_text()) if previous.exists() else {"stages": {}}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    results.update(
        command="python bench/review_scale.py " + " ".join(sys.argv[1:]),
        project=str(project),
        project_facts={k: v for k, v in found.items() if k in ("photos", "kept", "species", "flagged", "ranked")},
        samples=args.samples,
        machine=f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
    )
    results["stages"][args.stage] = {
        "code": commit.stdout.strip(),
        "note": args.note,
        "routes": rows,
        "report": report_figures(project),
    }
    write_results(args.name, results, markdown(results))


if __name__ == "__main__":
    main()
