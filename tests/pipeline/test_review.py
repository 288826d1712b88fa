"""`fishid review` in headless Chromium on the tiny run's outputs: filter, audit, decide
(both config tables written, the dry run plans only what depends on them), predict (the
labels `fishid predict` gives), and a screenshot of each page (docs/review/ when
FISHID_REVIEW_SCREENSHOTS=1)."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pandas as pd
import pytest
from conftest import REPO
from projectrun import RUN_CONFIG, environment, planned, run_config, snakemake, snakemake_command
from reportcheck import CHROMIUM, CHROMIUM_ARGS
from werkzeug.serving import make_server

from fishid.review import plan as review_plan
from fishid.review.app import create_app
from fishid.tables import read_table

DECISION_FILES = ["config/exclusions.tsv", "config/relabels.tsv"]
UPSTREAM = {"list_source", "fetch_images"}


@contextlib.contextmanager
def restored(project, names):
    """Put the files back byte for byte, with their modification times (Snakemake's trigger)."""
    saved = {n: ((project / n).read_bytes(), (project / n).stat()) for n in names}
    try:
        yield
    finally:
        for name, (data, stat) in saved.items():
            (project / name).write_bytes(data)
            os.utime(project / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@contextlib.contextmanager
def serving(project):
    app = create_app(project, configfiles=["config/run.yaml"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def chromium_or_skip():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run must install Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it and runs this test")


def shots_folder(tmp_path):
    return REPO / "docs/review" if os.environ.get("FISHID_REVIEW_SCREENSHOTS") else tmp_path


def decide(page, form, url, shot, timeout=300_000):
    """Click the form's button; the plan of the files as they are then, on the page after the
    decision or (while it is made, in the background) on the Plan page once it refreshed."""
    with page.expect_navigation():
        page.click(f"form#{form} button")
    page.screenshot(path=shot)
    if page.locator("#plan-computing").count():
        page.goto(f"{url}/plan")
    page.locator("#plan-as-of").wait_for(timeout=timeout)
    return {
        row.query_selector("td.rule").inner_text(): int(row.query_selector_all("td")[1].inner_text())
        for row in page.query_selector_all("#plan tr")
        if row.query_selector("td.rule")
    }


def test_review_app_in_chromium(tiny_project, tmp_path):
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    shots = shots_folder(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    clean = read_table(tiny_project / "results/clean/images.tsv")
    kept = clean[clean["kept"] == "True"]
    species = sorted(set(kept["taxon"]))[0]
    excluded, relabelled = sorted(kept[kept["taxon"] == species]["sha256"])[:2]
    new_label = sorted(set(kept["taxon"]) - {species})[0]

    with restored(tiny_project, DECISION_FILES), serving(tiny_project) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())

        page.goto(f"{url}/models/TL3o")
        assert "snakemake results/review/embedding_map/TL3o.json" in page.inner_text("#no-map")
        # The map's own rule, as a user asks for it (not part of the default run), before any
        # decision: after one, its inputs would be rebuilt first.
        made = snakemake(tiny_project, "results/review/embedding_map/TL3o.json", "--cores", "1")
        assert made.returncode == 0, made.stderr[-3000:]

        page.goto(url)
        page.screenshot(path=shots / "dataset.png")
        with page.expect_navigation():
            page.select_option("select[name=species]", species)
        assert [h.inner_text() for h in page.query_selector_all("h2.species")] == [species]
        named = clean["taxon"].where(clean["taxon"] != "", clean["listed_as"])
        assert len(page.query_selector_all(".thumb")) == (named == species).sum()

        page.click(f'.thumb[data-sha256="{excluded}"] a')
        assert page.inner_text("#audit").startswith(f"image {excluded}")
        page.screenshot(path=shots / "audit.png", full_page=True)
        page.fill("form#exclude input[name=reason]", "blurred (test)")
        shown = decide(page, "exclude", url, shots / "decided.png")

        page.goto(f"{url}/image/{relabelled}")
        page.select_option("form#relabel select[name=label]", new_label)
        page.fill("form#relabel input[name=reason]", "bars counted again (test)")
        shown_after_relabel = decide(page, "relabel", url, tmp_path / "relabelled.png")

        exclusions = read_table(tiny_project / "config/exclusions.tsv")
        relabels = read_table(tiny_project / "config/relabels.tsv")
        # The shipped entries (the demo's planted exclusions) stay, the new one is added after them.
        shipped = read_table(REPO / "config/exclusions.tsv").values.tolist()
        assert exclusions.values.tolist() == [*shipped, [excluded, "blurred (test)"]]
        assert relabels[["id", "label", "reason"]].values.tolist() == [
            [relabelled, new_label, "bars counted again (test)"]
        ]
        # The true plan: cleaning, then only the datasets holding the species before or after.
        config = run_config(tiny_project)

        def holding(taxa):
            return [name for name, spec in config["datasets"].items() if set(taxa) & set(spec["species"])]

        assert shown["split_dataset"] == len(holding([species]))
        assert page.inner_text("#plan-datasets").startswith(f"Split again: {', '.join(holding([species, new_label]))}.")
        true_plan = review_plan.planned(tiny_project, [RUN_CONFIG], config)
        assert shown_after_relabel == true_plan["counts"] and true_plan["datasets"] == holding([species, new_label])
        assert true_plan["counts"]["clean_images"] == 1 and not set(true_plan["counts"]) & UPSTREAM
        assert true_plan["counts"]["split_dataset"] == len(true_plan["datasets"])

        for name, path in [("queues", "/queues"), ("models", "/models/TL3o")]:
            page.goto(url + path)
            page.screenshot(path=shots / f"{name}.png", full_page=name == "models")
        legend = [li.inner_text() for li in page.query_selector_all("#legend li .name")]
        evaluated = read_table(tiny_project / "results/models/TL3o/predictions.tsv").query("split == 'test'")
        assert legend == [f"{label} ({n})" for label, n in sorted(evaluated["label"].value_counts().items())]

        photos = tmp_path / "photos"
        photos.mkdir()
        test_images = read_table(tiny_project / "results/splits/trio_other.tsv").sort_values("sha256").head(3)
        for path in test_images["derived_path"]:
            shutil.copy(tiny_project / "results/clean/derived" / path, photos / os.path.basename(path))
        page.goto(f"{url}/predict")
        page.select_option("select[name=model]", "TL3o")
        page.set_input_files("input[name=photos]", sorted(map(str, photos.iterdir())))
        with page.expect_navigation(timeout=120_000):
            page.click("form#predict button")
        page.screenshot(path=shots / "predict.png")
        headers = [th.inner_text() for th in page.query_selector_all("#predictions th")]
        rows = [
            [td.inner_text() for td in tr.query_selector_all("td")] for tr in page.query_selector_all("#predictions tr")
        ]
        shown_labels = {r[headers.index("file")]: r[headers.index("predicted")] for r in rows if r}
        browser.close()
    assert errors == []

    command = [sys.executable, str(REPO / "workflow/fishid_cli.py"), "predict", "--model", "TL3o", str(photos)]
    result = subprocess.run(command, cwd=tiny_project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cli = pd.read_csv(pd.io.common.StringIO(result.stdout), dtype=str, keep_default_na=False)
    assert shown_labels == dict(zip(cli["file"], cli["predicted"])) and len(shown_labels) == 3
    # Decisions undone, mtimes included: nothing to rerun.
    assert planned(tiny_project)[0] == {}


def press(page, key, timeout=60_000):
    """A key of the queue page that posts a decision or follows a link: wait for the next page."""
    with page.expect_navigation(timeout=timeout):
        page.keyboard.press(key)


def test_working_through_the_queue_in_chromium(tiny_project, tmp_path):
    """Three photos decided with the queue's keys (x, r, x), listed as pending, one undone: the
    tables hold exactly the other two rows, and the app's dry run plans cleaning again."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    shots = shots_folder(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    issues = read_table(tiny_project / "results/review/label_issues.tsv")
    issues = issues.assign(rank=issues["rank"].astype(int)).sort_values("rank", ignore_index=True)
    # The first photo whose suggested label is another (after the first): the one to relabel.
    relabel_at = next(i for i in range(1, len(issues)) if issues.loc[i, "predicted"] != issues.loc[i, "label"])
    excluded, relabelled, undone = issues.loc[[0, relabel_at, relabel_at + 1], "sha256"]
    suggested = issues.loc[relabel_at, "predicted"]

    with restored(tiny_project, DECISION_FILES), serving(tiny_project) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(f"{url}/queue?scope=all")
        assert page.get_attribute("#item", "data-sha256") == excluded
        assert "nan" not in page.inner_text("#facts")
        page.screenshot(path=shots / "queue.png", full_page=True)
        press(page, "x")
        assert "Saved for" in page.inner_text("#last-decision")
        for _ in range(1, relabel_at):
            press(page, "j")
        assert page.get_attribute("#item", "data-sha256") == relabelled
        assert page.inner_text("#suggested") == suggested
        press(page, "r")
        assert page.get_attribute("#item", "data-sha256") == undone
        press(page, "x")

        page.goto(f"{url}/pending")
        listed = [
            (tr.get_attribute("data-sha256"), tr.get_attribute("data-kind"))
            for tr in page.query_selector_all("#pending tr[data-sha256]")
        ]
        assert listed == [(excluded, "exclude"), (undone, "exclude"), (relabelled, "relabel")]
        page.screenshot(path=shots / "pending.png", full_page=True)
        with page.expect_navigation():
            page.click(f'#pending tr[data-sha256="{undone}"] form.undo button')
        listed = [tr.get_attribute("data-sha256") for tr in page.query_selector_all("#pending tr[data-sha256]")]
        assert listed == [excluded, relabelled]

        page.goto(f"{url}/image/{relabelled}")
        assert f"relabelling to {suggested}" in page.inner_text("#pending-decision")

        exclusions = read_table(tiny_project / "config/exclusions.tsv")
        relabels = read_table(tiny_project / "config/relabels.tsv")
        shipped = read_table(REPO / "config/exclusions.tsv").values.tolist()
        assert exclusions.values.tolist() == [*shipped, [excluded, "label-issue queue: excluded on review (rank 1)"]]
        assert relabels[["id", "label", "reason"]].values.tolist() == [
            [relabelled, suggested, f"label-issue queue: the suggested label (rank {relabel_at + 1})"]
        ]

        # Made in the background since the decisions: the page refreshes itself until it is done.
        page.goto(f"{url}/plan")
        page.locator("#plan-as-of").wait_for(timeout=300_000)
        rules = [td.inner_text() for td in page.query_selector_all("#plan td.rule")]
        assert "clean_images" in rules and not set(rules) & UPSTREAM
        assert page.inner_text("#plan-datasets").startswith("Split again: ")
        browser.close()
    assert errors == []


def snakemake_wrote(log: str) -> set[str]:
    """The files of every job a Snakemake run's log shows: outputs (a directory with what it
    holds), logs and benchmarks."""
    fields = re.findall(r"^\s+(?:output|log|benchmark): (.*)$", log, re.MULTILINE)
    return {path for line in fields for path in line.split(", ")}


def written_by(paths: set[str], written: set[str]) -> set[str]:
    return {p for p in paths if any(p == w or p.startswith(f"{w}/") for w in written)}


def listing(project) -> dict[str, tuple[int, int]]:
    """Every file of the project (size, modification time), less .snakemake/, Snakemake's own
    state (locks, metadata), which a dry run writes too."""
    return {
        str(p.relative_to(project)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in project.rglob("*")
        if p.is_file() and p.relative_to(project).parts[0] != ".snakemake"
    }


def get(url: str, form: dict | None = None) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    with urllib.request.urlopen(url, data=data, timeout=300) as reply:
        return reply.status, reply.read().decode()


def wait_for(path, text: str, process, timeout=120):
    """Until `text` is in the file `path` (a job started, in a Snakemake log), or the process ended."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)


def test_the_review_app_beside_a_running_snakemake_writes_only_decisions(tiny_project, tmp_path):
    """README: the app is safe to keep open while Snakemake runs. `fishid review` on a copy of
    the tiny run while Snakemake splits every dataset again (and caches it): its pages answer
    while the jobs run, a decision lands in config/exclusions.tsv, and nothing else in the
    project is written but the files of the jobs Snakemake ran."""
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, symlinks=True)  # modification times kept
    clean = read_table(project / "results/clean/images.tsv")
    photo = clean.loc[clean["kept"] == "True", "sha256"].iloc[0]
    pages = ["/", "/queue", "/queues", "/models", "/models/RI2", f"/image/{photo}", "/pending", "/export.csv"]
    targets = [f"results/splits/{name}.tsv" for name in run_config(project)["datasets"]]
    # Every image cache too: enough work that the run is still going while the app answers.
    targets += sorted(str(p.relative_to(project)) for p in project.glob("results/cache/*/*px.pt"))
    before = listing(project)
    app = subprocess.Popen(
        [sys.executable, str(REPO / "workflow/fishid_cli.py"), "review", "--root", str(project), "--port", "0"]
        + ["--configfile", str(RUN_CONFIG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    log_path = tmp_path / "snakemake.log"
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", app.stdout.readline()).group(1)
        with log_path.open("w") as log_file:
            run = subprocess.Popen(
                snakemake_command(project, *targets, "--forcerun", "split_dataset", "--cores", "1"),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment(),
            )
        try:
            # Once the first job has started: Snakemake has planned, and writes the project.
            wait_for(log_path, "rule split_dataset:", run)
            replies = [get(url + page) for page in pages]
            still_running = run.poll() is None
            csrf = re.search(r'name="csrf" value="([^"]+)"', replies[pages.index(f"/image/{photo}")][1]).group(1)
            form = {"sha256": photo, "action": "exclude", "reason": "blurred (test)", "csrf": csrf}
            replies += [get(f"{url}/decide", form), *(get(url + page) for page in pages)]
            run.wait(timeout=300)
        finally:
            run.kill()
    finally:
        app.kill()
        app.wait()
    log = log_path.read_text()
    assert run.returncode == 0, log[-3000:]
    assert still_running, "the Snakemake run ended before the app's pages were asked: give it more to do"
    assert [status for status, _ in replies] == [200] * (2 * len(pages) + 1)
    ran = snakemake_wrote(log)
    assert set(targets) <= ran and "results/clean/images.tsv" not in ran
    after = listing(project)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert set(targets) <= changed  # the run did write
    assert changed - written_by(changed, ran) == {"config/exclusions.tsv"}, sorted(changed - written_by(changed, ran))
    assert read_table(project / "config/exclusions.tsv").values.tolist()[-1] == [photo, "blurred (test)"]
