"""Models on crops against the same models on whole photos, per scene, from a finished demo run.

The report compares each model on crops with its twin on whole photos overall; the scene of a
synthetic photo (wide reef, anemone, studio, dark) is in its record's media_url, so here both
are also scored on each scene's test photos, with the detector's own score on them.

    python bench/crops_demo.py PROJECT        # a folder where `make demo` ran

Results: bench/results/crops_demo.json and .md.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from output import write_results  # noqa: E402

from fishid.config import kind_of  # noqa: E402
from fishid.detect import stage as detect  # noqa: E402
from fishid.tables import read_table  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project", type=Path)
    project = parser.parse_args().project
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    synthetic = [name for name, spec in config["sources"].items() if kind_of(name, spec) == "synthetic"]
    photos = detect.kept_photos(project / "results/clean/images.tsv", project / "results/clean/derived")
    records = pd.concat(
        [
            read_table(project / f"resources/records/{source}.tsv", ["record_id", "source", "media_url"])
            for source in synthetic
        ]
    )
    scenes = detect.known_truth(photos, records, synthetic).set_index("image")["scene"]
    quality = json.loads((project / "results/detect/quality.json").read_text())
    results = {"detector": {"all": quality["quality"], **quality["by_scene"]}, "pairs": []}
    models = config["models"]
    for name, spec in models.items():
        if "crop" not in spec:
            continue
        whole = {k: v for k, v in spec.items() if k not in ("crop", "control_of")}
        twin = next(n for n, other in models.items() if other == whole)
        pair = {"crops": name, "whole": twin, "scenes": {}}
        for model in (name, twin):
            predictions = read_table(project / f"results/models/{model}/predictions.tsv").query("split == 'test'")
            predictions = predictions.assign(scene=predictions["sha256"].map(scenes).fillna("(no scene)"))
            right = predictions["label"] == predictions["predicted"]
            for scene, hits in [("all", right), *right.groupby(predictions["scene"])]:
                pair["scenes"].setdefault(scene, {})[model] = f"{hits.mean():.3f} ({hits.sum()}/{len(hits)})"
        results["pairs"].append(pair)
    lines = ["# Models on crops against whole photos, per scene (the demo's test photos)", ""]
    lines.append(f"`python bench/crops_demo.py {project}`.")
    for pair in results["pairs"]:
        crops, whole = pair["crops"], pair["whole"]
        lines += ["", f"| scene | {whole} (whole photos) | {crops} (crops) | detector mAP@0.5 | mean IoU |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for scene, row in pair["scenes"].items():
            found = results["detector"].get(scene, {})
            lines.append(
                f"| {scene} | {row.get(whole, '')} | {row.get(crops, '')} | {found.get('map50', '')} | "
                f"{found.get('mean_iou', '')} |"
            )
    write_results("crops_demo", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
