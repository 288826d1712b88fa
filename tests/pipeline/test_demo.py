"""The demo itself: config/config.yaml run as the README runs it (`snakemake --profile
profiles/local`) in a copy of the project, then the claims the README makes about it.

It is the longest test (about 8 minutes on 2 cores); `pytest -m "not demo"` leaves it out
while iterating, CI runs it."""

import json
import re

import planted
import pytest
import yaml
from conftest import REPO, require_one_worker
from projectrun import make_project, snakemake
from reportcheck import FIGURES_PER_MODEL, check_report, render_in_chromium

from fishid.clean import stage as clean
from fishid.tables import read_table

pytestmark = pytest.mark.demo


@pytest.fixture(scope="module")
def demo(request, tmp_path_factory):
    require_one_worker(request.session, "demo")
    project = make_project(tmp_path_factory.mktemp("demo"), config=None)
    result = snakemake(project, "--profile", str(project / "profiles/local"), timeout=1800)
    assert result.returncode == 0, result.stderr[-5000:]
    return project, yaml.safe_load((project / "config/config.yaml").read_text())


def metrics(project, name) -> dict:
    return json.loads((project / "results/models" / name / "metrics.json").read_text())


def test_every_trained_model_beats_the_majority_class_baseline(demo):
    """A zero-shot model is trained by no seed of its own and may land near chance on another
    backbone: it must beat the baseline or carry the report's "learned nothing" flag, never be
    shown as if it had learned."""
    project, config = demo
    for name, spec in config["models"].items():
        scores = metrics(project, name)
        beats = scores["accuracy"] > scores["majority_baseline"]
        if spec["arch"] == "clip_zeroshot":
            assert beats or scores["learned_nothing"], (name, scores["accuracy"], scores["majority_baseline"])
        else:
            assert beats, (name, scores["accuracy"], scores["majority_baseline"])


def test_every_transfer_model_beats_the_same_network_on_a_random_backbone(demo):
    project, config = demo
    controls = {spec["control_of"]: name for name, spec in config["models"].items() if spec.get("control_of")}
    assert {"TL2", "TL4", "TL4.2"} <= set(controls)
    for model, control in controls.items():
        assert metrics(project, model)["accuracy"] > metrics(project, control)["accuracy"], (model, control)


def test_the_report_shows_every_section_for_every_model(demo):
    project, config = demo
    page = check_report(project, config)
    # The demo's backbone is pre-trained in the pipeline, not ImageNet's: the page says so.
    assert "Offline stand-in for ImageNet" in page


def test_each_planted_defect_was_left_out_for_its_own_reason_and_no_clean_photo_was(demo):
    """The demo's dirty data (sources.synthetic.defects) went through its own run's download and
    cleaning: every planted kind is in the listing and caught for its reason."""
    project, config = demo
    records = read_table(project / "resources/records/synthetic.tsv")
    downloads = read_table(project / "resources/downloads/synthetic.tsv")
    rows = planted.clean_rows(read_table(project / "results/clean/images.tsv"))
    exclusions = clean.read_exclusions(project / config["clean"]["exclusions"])
    assert planted.check(records, downloads, rows, exclusions) == set(config["sources"]["synthetic"]["defects"])


def test_the_reports_cleaning_section_counts_at_least_eight_reasons(demo):
    project, _ = demo
    page = (project / "results/report/index.html").read_text()
    section = page[page.index("<h3>Cleaning</h3>") : page.index("<h3>Attribution</h3>")]
    counts = re.findall(r"<tr><td>(download|cleaning)</td><td>([^<]+)</td><td>(\d+)</td></tr>", section)
    assert len({reason for _, reason, _ in counts}) >= 8, counts
    assert {"not a photo", "near duplicate", "label conflict", "licence unknown"} <= {r for _, r, _ in counts}


def test_no_model_solves_the_four_species_test_set(demo):
    project, config = demo
    for name, spec in config["models"].items():
        if spec["dataset"] == "four_species":
            assert metrics(project, name)["accuracy"] < 1.0, name


def test_resnet18_from_scratch_and_the_studys_network_are_not_told_apart_at_the_same_image_size(demo):
    """The README: at the demo's 64 px the two are a couple of photos apart, either way (this test
    once asserted that R18-scratch4 won, by 2 photos; the planted mislabelled photos turned that
    round). Each accuracy lies inside the other's 95 % interval: a run that separates them must
    say so in the README."""
    project, config = demo
    scratch, ri = config["models"]["R18-scratch4"], config["models"]["RI4"]
    assert scratch["image_size"] == ri["image_size"] and scratch["dataset"] == ri["dataset"]
    a, b = metrics(project, "R18-scratch4"), metrics(project, "RI4")
    assert b["accuracy_ci95"][0] <= a["accuracy"] <= b["accuracy_ci95"][1]
    assert a["accuracy_ci95"][0] <= b["accuracy"] <= a["accuracy_ci95"][1]


def test_the_report_renders_in_headless_chromium(demo):
    project, config = demo
    sizes = render_in_chromium(project / "results/report/index.html", project / "results/report/screenshot.png")
    # Every model's figures and the detect stage's sheet of crops.
    assert len(sizes) == FIGURES_PER_MODEL * len(config["models"]) + 1


def test_the_detector_is_scored_on_test_photos_and_crops_sit_beside_whole_photos(demo):
    """The detector's mAP@0.5 on the test photos, in the report and, as this run makes it, in the
    README; TL4 on crops evaluated on exactly TL4's test photos, the two side by side."""
    project, config = demo
    quality = json.loads((project / "results/detect/quality.json").read_text())
    assert quality["evaluated_on"] == "test" and quality["quality"]["photos"] > 100
    assert quality["quality"]["map50"] > 0.7 and "wide" in quality["by_scene"]
    page = (project / "results/report/index.html").read_text()
    section = page[page.index('<h3 id="detection">') : page.index("<h3>Attribution</h3>")]
    assert f'mAP@0.5 <span class="count">{quality["quality"]["map50"]}</span>' in section
    readme = (REPO / "README.md").read_text()
    assert f"mAP@0.5 {quality['quality']['map50']:.3f} " in readme
    crops, whole = metrics(project, "TL4-crop"), metrics(project, "TL4")
    tl4 = read_table(project / "results/models/TL4/predictions.tsv").query("split == 'test'")
    on_crops = read_table(project / "results/models/TL4-crop/predictions.tsv").query("split == 'test'")
    assert sorted(on_crops["sha256"]) == sorted(tl4["sha256"]) and crops["n"] == whole["n"]
    pairs = page[page.index('<h3 id="crops">') :]
    assert "<td>TL4-crop</td>" in pairs and "<td>TL4</td>" in pairs


def accuracy_cell(scores: dict, interval: bool = True) -> str:
    cell = f"{scores['accuracy']:.3f} ({scores['correct']}/{scores['n']})"
    low, high = scores["accuracy_ci95"]
    return f"{cell} [{low:.2f}, {high:.2f}]" if interval else cell


def results_table(project, config) -> list[str]:
    """The README's results table as this run makes it: one row per model, controls beside the
    model they control."""
    models = config["models"]
    controls = {spec["control_of"]: name for name, spec in models.items() if spec.get("control_of")}
    rows = []
    for name, spec in models.items():
        if spec.get("control_of"):
            continue
        scores = metrics(project, name)
        backbone = "(random init)" if spec["arch"] == "ri" else spec.get("backbone", "")
        control = (
            f"{controls[name]} {accuracy_cell(metrics(project, controls[name]), False)}" if name in controls else ""
        )
        cells = [name, spec["arch"], spec["dataset"], backbone, accuracy_cell(scores)]
        rows.append("| " + " | ".join([*cells, f"{scores['majority_baseline']:.3f}", control]) + " |")
    return rows


def readme_table() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"^\| model \| arch \|.*\n\| ---.*\n((?:\|.*\n)+)", text, re.MULTILINE)
    return [line.replace("|  |", "| |").rstrip() for line in block.group(1).splitlines()]


def test_the_readme_results_table_is_this_runs_output(demo):
    """The numbers the README shows are the ones the demo makes (same profile, same seeds)."""
    project, config = demo
    made = [row.replace("|  |", "| |") for row in results_table(project, config)]
    assert readme_table() == made, "README.md's results table should read:\n" + "\n".join(made)


def test_every_model_is_measured_per_source_and_the_unseen_source_is_never_trained_on(demo):
    """The demo's two sources (field photos and museum studio photos) are told apart in every
    model's metrics; museum_unseen trains on the field only and tests on the museum only."""
    project, config = demo
    sources = set(config["sources"])
    for name, spec in config["models"].items():
        scores = metrics(project, name)
        split = read_table(project / f"results/splits/{spec['dataset']}.tsv")
        evaluated = split[split["split"] == scores["evaluated_on"]]
        expected = {s for listed in evaluated["sources"] for s in listed.split("|")}
        assert set(scores["by_source"]) == expected <= sources, name
        assert sum(row["n"] for row in scores["by_source"].values()) >= scores["n"], name
    unseen = metrics(project, "TL4-unseen")
    assert unseen["trained_on"] == ["synthetic"] and set(unseen["by_source"]) == {"museum"}
    assert not unseen["by_source"]["museum"]["too_few"]
    assert metrics(project, "TL4")["trained_on"] == ["museum", "synthetic"]
    page = (project / "results/report/index.html").read_text()
    section = page[page.index('<h3 id="cross-source">') : page.index('<h3 id="model-')]
    for name in config["models"]:
        assert f"<td>{name}</td>" in section, name
    assert "(unseen)" in section


def test_no_near_duplicate_crosses_a_split_and_the_report_says_so(demo):
    project, config = demo
    page = (project / "results/report/index.html").read_text()
    for dataset in config["datasets"]:
        pairs = read_table(project / f"results/splits/{dataset}.leaks.tsv")
        assert pairs.empty, (dataset, pairs.head())
    for role in ("val", "test"):
        assert page.count(f"<tr><td>{role}</td><td>0</td><td>0</td></tr>") == len(config["datasets"]), role


def test_the_dataset_chosen_by_rule_spans_three_genera_and_its_model_answers_by_rank(demo):
    """damselfish is {within: Pomacentridae, top: 6} on the cleaned counts: the six species with
    the most kept photos, whichever they are, and TL6-damsel's metrics and report go by rank."""
    project, config = demo
    clean = read_table(project / "results/clean/images.tsv")
    kept = clean[(clean["kept"] == "True") & (clean["family"] == "Pomacentridae") & (clean["taxon"] != "")]
    counts = kept.groupby("taxon").size()
    expected = sorted(counts.sort_index().sort_values(ascending=False, kind="stable").index[:6])
    split = read_table(project / "results/splits/damselfish.tsv")
    assert sorted(split["label"].unique()) == expected
    assert sorted(split["genus"].unique()) == ["Amphiprion", "Chromis", "Premnas"]
    decisions = read_table(project / "results/splits/damselfish.decisions.tsv")
    assert set(decisions.loc[decisions["decision"] == "not chosen", "taxon"]) == set(counts.index) - set(expected)
    by_rank = metrics(project, "TL6-damsel")["by_rank"]
    accuracy = by_rank["accuracy"]
    assert accuracy["species"] <= accuracy["genus"] <= accuracy["family"] == 1.0
    fallback = by_rank["fallback"]
    assert fallback["chosen_on"] == "val" and 0 < fallback["coverage"] <= 1
    assert sum(fallback["answered"].values()) == pytest.approx(1.0)
    assert by_rank["mean_distance"] >= 0 and by_rank["genera"] == ["Amphiprion", "Chromis", "Premnas"]
    page = (project / "results/report/index.html").read_text()
    assert 'id="by-rank-TL6-damsel"' in page


def test_the_label_error_queue_ranks_the_planted_mislabelled_photos_near_its_top(demo):
    """The demo's planted `mislabelled` photos (one species drawn, another filed; kept by
    cleaning) against the queue (rule label_issues: the pool's features of each photo's crop and
    a network trained per fold, their probabilities together, calibrated by the crop's size).
    Issue #25 asks for every one in the top 2 x planted. Each model alone left one past the top
    12 under the random draws of the splits or the removal-stable ones (the pool's features
    29th and 33rd, the network 12th and 13th); together 8th and 10th at worst (#25's note)."""
    project, config = demo
    records = read_table(project / "resources/records/synthetic.tsv")
    rows = planted.clean_rows(read_table(project / "results/clean/images.tsv"))
    queue = read_table(project / "results/review/label_issues.tsv").set_index("sha256")
    summary = json.loads((project / "results/review/label_issues.json").read_text())
    mine = [rid for rid in records["record_id"] if planted.kind_of(rid) == "mislabelled"]
    assert len(mine) == config["sources"]["synthetic"]["defects"]["mislabelled"] >= 4
    assert all(rows[rid]["kept"] for rid in mine)
    ranks = sorted(int(queue.loc[rows[rid]["sha256"], "rank"]) for rid in mine)
    assert ranks[-1] <= 2 * len(ranks), ranks
    # The summary reports the flags, under a tenth of the photos, and that the model read crops.
    assert summary["photos"] == len(queue) and summary["flagged"] == (queue["flagged"] == "True").sum()
    assert summary["flagged_share"] < 0.1
    # Calibrated by the fish's size: the probabilities of a large fish sharper than a small one's.
    temperatures = summary["calibration"]
    assert temperatures["temperature_150px"] < temperatures["temperature_100px"] < temperatures["temperature_50px"]
    crops = read_table(project / "results/detect/crops.tsv")
    assert summary["cropped"] == queue.index.isin(crops["image"]).sum() > 0.9 * len(queue)
    # Its job, in the demo's DAG (the demo's time budget): about 110 CPU-seconds, 90 of them the
    # networks (15 with the pool's features alone). It ran
    # in a child of the resident worker (the local profile), whose own count is in its log: the
    # benchmark measured only the script that handed the job over.
    cpu = re.findall(r"fishid worker: .*?, ([\d.]+) CPU-s,", (project / "logs/label_issues.log").read_text())
    assert len(cpu) == 1 and float(cpu[0]) < 200
