"""The detect stage: the configured detector learns where boxes are known, then finds the fish
in every kept photo, crops it, and is scored where the boxes are known.

Known boxes come from the synthetic sources only: their `media_url` describes the picture, and
fishid.sources.synthetic_boxes reads every fish's box from it. A record of any other source
carries no box, whatever its `media_url` says.

The detector never learns from a photo that any dataset holds out (validation or test), so
its score on the test photos, and the crops that models are evaluated on, are of photos it
has not seen. Which photos a dataset holds out comes from its split made here from the clean
table (fishid.detect.scope), not from the split tables: the detect rules do not wait for the
splits, and rerun only when the photos they read change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fishid import runtime, steps
from fishid.detect import boxes as box_table
from fishid.detect import crops as crop_table
from fishid.detect import detectors, infer, scope, sheet
from fishid.detect import found as found_module
from fishid.sources import synthetic_boxes
from fishid.sources.synthetic_render import decode_url
from fishid.tables import CLEAN_COLUMNS_WITHOUT_MEASURES, read_table, write_table

log = logging.getLogger(__name__)

QUALITY_SPLIT = scope.QUALITY_SPLIT
# What the stage reads of the clean table.
CLEAN_READ = ["sha256", "kept", "width", "height", "derived_path", "record_ids"]


def kept_photos(clean_path, derived_root) -> pd.DataFrame:
    """The kept photos: image (SHA-256), path (the derived copy), width and height (the original's)."""
    kept = scope.kept_rows(read_table(clean_path, CLEAN_READ))
    paths = [str(Path(derived_root, p)) for p in kept["derived_path"]]
    return kept.drop(columns="derived_path").assign(path=paths)[["image", "path", "width", "height", "record_ids"]]


def with_boxes(known: pd.DataFrame) -> pd.DataFrame:
    """Per row of scope.known_sources: its true boxes (original pixels) and its scene."""
    return pd.DataFrame(
        {
            "image": known["image"].to_numpy(),
            "boxes": [synthetic_boxes.fish_boxes(url) for url in known["url"]],
            "scene": [decode_url(url)[1].get("scene", "") for url in known["url"]],
        },
        columns=["image", "boxes", "scene"],
    )


def known_truth(photos: pd.DataFrame, records: pd.DataFrame, synthetic_sources) -> pd.DataFrame:
    """Per photo of a synthetic source: its true boxes (original pixels) and its scene."""
    return with_boxes(scope.known_sources(photos, records, synthetic_sources))


def _tensor_and_boxes(path, boxes, original_size):
    with Image.open(path) as photo:
        tensor = infer.image_tensor(photo)
    sx, sy = tensor.shape[-1] / original_size[0], tensor.shape[-2] / original_size[1]
    scaled = torch.tensor([[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in boxes], dtype=torch.float32)
    return tensor, scaled.reshape(-1, 4)


def train(clean_path, derived_root, records_paths, datasets, synthetic_sources, detector, settings, folder):
    """Train `detector` on at most settings["train_photos"] of the kept photos with known boxes that
    no dataset holds out (a sample seeded by the detector's seed; `datasets`: every dataset's
    settings, whose splits of the clean table hold photos out); write its folder."""
    kind = detectors.detector_kind(detector)
    if kind.train is None:
        raise ValueError(f"detector {detector!r} is used as it comes: it has nothing to train")
    settings = dict(settings)  # detect.training with its defaults (the rule's), and train_photos
    cap = settings.pop("train_photos")
    clean = read_table(clean_path, CLEAN_COLUMNS_WITHOUT_MEASURES)
    splits = scope.dataset_splits(clean, datasets)
    rows = scope.training_rows(
        clean, scope.read_records(records_paths), splits, synthetic_sources, cap, settings["seed"]
    )
    if rows.empty:
        raise ValueError(
            f"detector {detector!r} learns from photos with known boxes (a synthetic source's), and every "
            "such kept photo is held out by a dataset (or there is none): add a synthetic source, or use a "
            "detector that needs no training"
        )
    pairs = []
    for row in rows.itertuples():
        path = Path(derived_root, row.derived_path)
        pairs.append(_tensor_and_boxes(path, synthetic_boxes.fish_boxes(row.url), (row.width, row.height)))
    device = runtime.select_device()
    model, history = kind.train([t for t, _ in pairs], [b for _, b in pairs], settings, device=device)
    kind.save(model, settings, folder, photos=len(pairs), device=device.type, history=history)
    log.info("detector %s trained on %d photos", detector, len(pairs))
    return history


def quality(found: pd.DataFrame, truth: pd.DataFrame, min_score: float) -> dict:
    """mAP@0.5 and mean best IoU of the boxes `found` against the `truth` of the same photos."""
    predictions = box_table.predictions_of(found)
    known = {row.image: [tuple(b) for b in row.boxes] for row in truth.itertuples()}
    mine = {image: predictions.get(image, []) for image in known}
    fish = sum(len(b) for b in known.values())
    sure = {image: [p for p in boxes if p[1] >= min_score] for image, boxes in mine.items()}
    return {
        "photos": len(known),
        "fish": fish,
        "map50": round(box_table.average_precision(known, mine), 4) if fish else None,
        "mean_iou": round(box_table.mean_best_iou(known, mine, min_score), 4) if fish else None,
        "photos_without_box": sum(1 for boxes in sure.values() if not boxes),
    }


def run(
    clean_path,
    derived_root,
    records_paths,
    datasets,
    synthetic_sources,
    detector,
    folder,
    threshold,
    padding,
    out_boxes,
    out_crops,
    out_queue,
    out_quality,
    crop_root,
    out_sheet,
    found_root,
) -> dict:
    """Boxes of every kept photo, their crops (content-addressed under `crop_root`) with provenance,
    the queue of photos without a fish, and the detector's score on the test photos whose boxes are known
    (of the splits of `datasets`, every dataset's settings, made from the clean table). The boxes of
    photos this detector has looked at before come from `found_root` (fishid.detect.found)."""
    model = detectors.load_detector(detector, folder).to(runtime.select_device())
    photos = kept_photos(clean_path, derived_root)
    sizes = {row.image: (row.width, row.height) for row in photos.itertuples()}
    paths = dict(zip(photos["image"], photos["path"]))
    found, looked_before = found_module.detect(model, paths, detector, sizes, found_root, folder)
    log.info("%d of %d photos' boxes from %s", looked_before, len(paths), found_root)
    box_table.write_boxes(found, out_boxes)
    crops, queue = crop_table.crop_photos(found, paths, crop_root, detector, threshold, padding, sizes)
    write_table(crops, out_crops, crop_table.CROP_COLUMNS)
    write_table(queue, out_queue, crop_table.REVIEW_COLUMNS)
    clean = read_table(clean_path, CLEAN_COLUMNS_WITHOUT_MEASURES)
    splits = scope.dataset_splits(clean, datasets)
    truth = with_boxes(scope.quality_rows(clean, scope.read_records(records_paths), splits, synthetic_sources))
    scenes = sorted(s for s in truth["scene"].unique() if s)
    result = {
        "detector": detector,
        "threshold": threshold,
        "padding": padding,
        "photos": len(photos),
        "cropped": len(crops),
        "no_fish_found": len(queue),
        "evaluated_on": QUALITY_SPLIT,
        "quality": quality(found, truth, threshold),
        "by_scene": {s: quality(found, truth[truth["scene"] == s], threshold) for s in scenes},
    }
    Path(out_quality).write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    shown = sheet_photos(photos, truth, queue)
    sheet.sheet(shown, crops, crop_root).save(out_sheet, optimize=True)
    return result


SHEET_PER_SCENE = 2
SHEET_UNFOUND = 3


def sheet_photos(photos: pd.DataFrame, truth: pd.DataFrame, queue: pd.DataFrame) -> pd.DataFrame:
    """The photos the sheet shows: the first (by SHA-256) of each scene among the test photos,
    then the first of those where no fish was found."""
    chosen = [
        image
        for _, scene in truth.sort_values("image").groupby("scene", sort=True)
        for image in scene["image"].head(SHEET_PER_SCENE)
    ]
    chosen += sorted(queue["image"])[:SHEET_UNFOUND]
    return photos.set_index("image").loc[chosen].reset_index()


def cropper(results_root, detector: str):
    """What the detect stage did to a photo, for one photo in memory (`fishid predict` on a model
    that chose `crop`): its crop, or the photo itself where no fish was found. The detector, the
    threshold and the padding are the run's own (results/detect)."""
    folder = Path(results_root, "detect")
    run = json.loads((folder / "quality.json").read_text())
    model = detectors.load_detector(detector, folder / detector)

    def cut(image: Image.Image) -> Image.Image:
        found = infer.detect_image(model, image, "", detector)
        piece = crop_table.cut_to_fish(image, found, run["threshold"], run["padding"])
        return image if piece is None else piece[0]

    return cut


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


@steps.declare(
    "train-detector",
    "train the fish detector",
    *steps.FOUND_ON,
    steps.Option("detector", "wildcards"),
    steps.SPEC,
    steps.par("out", key="folder", help="the detector's folder"),
)
def train_step(clean, derived, records, datasets, detector, spec, out, synthetic_sources=(), threads=1):
    """The `train-detector` step (rule train_detector), on `threads` of PyTorch's."""
    torch.set_num_threads(threads)
    train(clean, derived, records, datasets, synthetic_sources, detector, spec, out)


@steps.declare(
    "detect",
    "find the fish in every kept photo and crop it",
    *steps.FOUND_ON,
    steps.par("detector"),
    steps.par("folder", help="the detector's folder (weights.pt, meta.json)"),
    steps.par("threshold", type="float"),
    steps.par("padding", type="float"),
    steps.out("boxes"),
    steps.out("crops"),
    steps.out("queue"),
    steps.out("quality"),
    steps.out("crop_store", key="store"),
    steps.out("sheet", help="PNG: crops beside their photos"),
    steps.par("found", help="the boxes found before, per detector and photo (kept)"),
)
def detect_step(
    clean,
    derived,
    records,
    datasets,
    detector,
    folder,
    threshold,
    padding,
    boxes,
    crops,
    queue,
    quality,
    crop_store,
    sheet,
    found,
    synthetic_sources=(),
    threads=1,
):
    """The `detect` step (rule detect_fish), on `threads` of PyTorch's, then a summary."""
    torch.set_num_threads(threads)
    result = run(
        clean,
        derived,
        records,
        datasets,
        synthetic_sources,
        detector,
        folder,
        threshold,
        padding,
        boxes,
        crops,
        queue,
        quality,
        crop_store,
        sheet,
        found,
    )
    log.info(
        "%d photos: %d cropped, %d without a fish; mAP@0.5 on %s %s",
        result["photos"],
        result["cropped"],
        result["no_fish_found"],
        result["evaluated_on"],
        result["quality"]["map50"],
    )
