"""The non-photo flags (fishid.clean.photo_filters) on real photos and on made-up non-photos.

Real photos are read where they lie (../shared/data); a test that needs them is skipped
with the reason when they are absent. Every threshold is the one of config/config.yaml.
"""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SHARED_DATA
from PIL import Image, ImageDraw

from fishid.clean import photo_filters
from fishid.clean import stage as clean
from fishid.clean.decode import decode

DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["clean"]
SETTINGS = DEMO["non_photo"]
GREY_LIMIT = SETTINGS["greyscale"]["midtone_chroma_below"]
OLD_CHROMA_LIMIT = 6  # the greyscale threshold on whole-picture chroma before issue 11
# Dark underwater photos of classify2-dev that whole-picture chroma took for greyscale scans.
DARK_PHOTOS = ["gbif_clar_382.jpg", "pixAmphiprion_clarkii534.jpg"]


def decoded(data: bytes) -> Image.Image:
    """As cleaning decodes a download for the demo configuration (JPEG at reduced scale)."""
    return decode(data, clean.settings_with_defaults({})["max_pixels"], at_least=DEMO["max_side"]).image


def as_jpeg(image: Image.Image, **options) -> Image.Image:
    data = io.BytesIO()
    image.save(data, format="JPEG", **options)
    return decoded(data.getvalue())


def reasons(*images: Image.Image) -> list[str]:
    table = pd.DataFrame([photo_filters.measure(image) for image in images])
    return photo_filters.non_photo_reasons(table, SETTINGS).tolist()


def seed_mini_photos(seed_mini) -> list[Path]:
    photos = sorted(seed_mini.rglob("*.jpg"))
    assert len(photos) == 51, "seed-mini holds 51 JPEG photos (../shared/data/README.md)"
    return photos


def greyscale_scan(photo: Image.Image, noise: float, seed: int, **jpeg) -> Image.Image:
    """A photo printed in grey and scanned: the scanner adds noise to each channel, then JPEG."""
    grey = np.asarray(photo.convert("L").convert("RGB"), dtype=float)
    noisy = grey + np.random.default_rng(seed).normal(0, noise, grey.shape)
    return as_jpeg(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), **jpeg)


def paint_fish(draw: ImageDraw.ImageDraw, box, body=(235, 110, 25)) -> None:
    """A clownfish as a drawing has it: flat orange, two white bands, a dark outline, a tail."""
    x0, y0, x1, y1 = box
    width = x1 - x0
    draw.ellipse(box, fill=body, outline=(40, 20, 10), width=2)
    for at in (0.3, 0.6):
        draw.rectangle((x0 + at * width, y0 + 4, x0 + (at + 0.08) * width, y1 - 4), fill=(245, 245, 240))
    draw.polygon([(x1 - 4, (y0 + y1) / 2), (x1 + width // 4, y0), (x1 + width // 4, y1)], fill=body)


def drawing() -> Image.Image:
    image = Image.new("RGB", (400, 300), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 220, 400, 300), fill=(120, 190, 220))
    paint_fish(draw, (90, 90, 280, 180))
    draw.ellipse((110, 120, 125, 135), fill=(0, 0, 0))
    return image


def stamp() -> Image.Image:
    """A postage stamp as a web page shows it: perforated white paper, printed frame, picture, value."""
    width, height, hole = 300, 380, 7
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    page = (200, 200, 200)  # what shows through the perforation holes
    for x in range(hole, width, 3 * hole):
        draw.ellipse((x - hole, -hole, x + hole, hole), fill=page)
        draw.ellipse((x - hole, height - hole, x + hole, height + hole), fill=page)
    for y in range(hole, height, 3 * hole):
        draw.ellipse((-hole, y - hole, hole, y + hole), fill=page)
        draw.ellipse((width - hole, y - hole, width + hole, y + hole), fill=page)
    draw.rectangle((24, 24, width - 24, height - 24), fill=(30, 80, 150))
    draw.rectangle((36, 36, width - 36, height - 80), fill=(90, 170, 210))
    paint_fish(draw, (70, 140, 200, 210))
    draw.text((60, height - 60), "NIPPON 80", fill=(255, 255, 255))
    return image


def dark_underwater_scene(seed: int = 1) -> Image.Image:
    """A night dive: a dim grey reef fading into black water, one small shaded fish in the flash."""
    rng = np.random.default_rng(seed)
    height, width = 360, 480
    y, x = np.mgrid[0:height, 0:width]
    reef = np.clip((y - 230 + 25 * np.sin(x / 37)) / 130, 0, 1) * (30 + 25 * np.sin(x / 11) * np.cos(y / 7))
    light = 3 + reef + 6 * np.exp(-(((x - 240) / 160) ** 2 + ((y - 180) / 120) ** 2))
    water = light[..., None] * np.array([0.95, 1.0, 1.1])
    water += rng.normal(0, 2.5, (height, width, 1)) + rng.normal(0, 0.8, (height, width, 3))
    flat = Image.new("RGB", (width, height))
    paint_fish(ImageDraw.Draw(flat), (200, 160, 280, 200))
    fish = np.asarray(flat, dtype=float)
    # Lit from above and with the sensor's noise: a fish in a photo is shaded, not a flat fill.
    shade = np.clip(1.15 - (y - 160) / 70, 0.5, 1.15)[..., None]
    lit = fish * shade + rng.normal(0, 4, fish.shape)
    scene = np.where(fish.any(axis=2, keepdims=True), lit, water)
    return as_jpeg(Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)), quality=85)


# --- the measures ---------------------------------------------------------------------


def test_midtone_chroma_ignores_near_black_and_near_white_pixels():
    pixels = np.zeros((10, 10, 3), dtype=np.int16)  # black background
    pixels[:2, :2] = (250, 250, 240)  # a white highlight: spread 10 but near-white
    pixels[5, 5] = (200, 100, 50)  # spread 150
    pixels[6, 6] = (0, 0, 120)  # saturated blue: dark in luminance, still a mid-tone (spread 120)
    pixels[7, 7] = (30, 35, 39)  # near-black
    assert photo_filters.midtone_chroma(pixels) == 135
    assert float(photo_filters.channel_spread(pixels).mean()) == pytest.approx((4 * 10 + 150 + 120 + 9) / 100)
    assert photo_filters.midtone_chroma(np.zeros((4, 4, 3), dtype=np.int16)) == 0


def test_measure_reads_colour_from_an_averaged_thumbnail():
    # Per-pixel colour noise of a grey picture cancels out; the old chroma (sharp thumbnail) sees it.
    rng = np.random.default_rng(3)
    noisy = np.clip(128 + rng.normal(0, 6, (256, 256, 3)), 0, 255).astype(np.uint8)
    measures = photo_filters.measure(Image.fromarray(noisy))
    assert measures["chroma"] > 10
    assert measures["midtone_chroma"] < 3
    assert set(measures) == {"chroma", "midtone_chroma", "colours", "flat_fraction"}


def test_non_photo_reasons_name_the_measure_and_threshold():
    table = pd.DataFrame(
        {
            "chroma": [1.0, 40.0, 3.0, np.nan],
            "midtone_chroma": [0.5, 60.0, 45.0, np.nan],
            "colours": pd.array([20, 900, 300, pd.NA], dtype="Int64"),
            "flat_fraction": [0.95, 0.1, 0.2, np.nan],
        }
    )
    got = photo_filters.non_photo_reasons(table, SETTINGS).tolist()
    assert got == [
        f"greyscale (mid-tone chroma 0.5 < {GREY_LIMIT:g}); few colours (20 < 128); "
        "large flat areas (95% of pixels > 85%)",
        "",
        "",  # a dark photo: whole-picture chroma 3, mid-tones coloured
        "",  # undecodable: no measure, no flag (decoding gives the reason)
    ]
    only_grey = {"greyscale": SETTINGS["greyscale"]}
    assert photo_filters.non_photo_reasons(table, only_grey)[0] == f"greyscale (mid-tone chroma 0.5 < {GREY_LIMIT:g})"
    assert (photo_filters.non_photo_reasons(table, {}) == "").all()


def test_study_configuration_uses_the_demo_thresholds():
    study = yaml.safe_load((REPO / "config" / "amphiprion.yaml").read_text())["clean"]["non_photo"]
    assert study == SETTINGS
    assert set(SETTINGS) == {"greyscale", "few_colours", "flat_areas"}


# --- real photos ------------------------------------------------------------------------


def test_every_seed_mini_jpeg_photo_is_kept_and_the_gif_drawing_is_dropped(seed_mini):
    photos = seed_mini_photos(seed_mini)
    images = [decoded(path.read_bytes()) for path in photos]
    got = dict(zip((p.name for p in photos), reasons(*images)))
    assert {name: reason for name, reason in got.items() if reason} == {}
    lowest = min(photo_filters.measure(image)["midtone_chroma"] for image in images)
    assert lowest > 2 * GREY_LIMIT  # a margin, not a near miss
    (gif,) = seed_mini.rglob("*.gif")
    # The GIF is a palette drawing: dropped for its colours, not as greyscale.
    assert reasons(decoded(gif.read_bytes())) == ["few colours (15 < 128)"]


@pytest.mark.parametrize(
    "noise, jpeg",
    [
        (2, {"quality": 85}),  # a common JPEG: colour at half resolution
        (4, {"quality": 92, "subsampling": 0}),  # full-resolution colour keeps the scanner's noise
    ],
    ids=["mild-noise", "colour-noise-kept"],
)
def test_every_seed_mini_photo_scanned_in_grey_is_dropped_as_greyscale(seed_mini, noise, jpeg):
    for seed, path in enumerate(seed_mini_photos(seed_mini)):
        photo = decoded(path.read_bytes())
        scan = greyscale_scan(photo, noise, seed, **jpeg)
        measured = photo_filters.measure(scan)
        assert measured["midtone_chroma"] < GREY_LIMIT / 2, path.name
        (reason,) = reasons(scan)
        assert reason.startswith(f"greyscale (mid-tone chroma {measured['midtone_chroma']:g} < {GREY_LIMIT:g})"), (
            path.name
        )


def classify2_photos() -> dict[str, Path]:
    photos = {p.name: p for p in (SHARED_DATA / "classify2-dev").rglob("*") if p.is_file()}
    assert len(photos) == 366, f"classify2-dev (366 photos) not found whole under {SHARED_DATA}: see ../shared/data"
    return photos


def test_every_real_photo_of_classify2_dev_passes_the_non_photo_checks_and_its_drawing_does_not():
    """The README's claim, on all 366 files: every photo is kept, and the one GIF, a 15-colour
    drawing (seed-mini holds it too), is dropped for its colours."""
    photos = classify2_photos()
    found = dict(zip(photos, reasons(*(decoded(path.read_bytes()) for path in photos.values()))))
    dropped = {name: reason for name, reason in found.items() if reason}
    assert list(dropped) == ["Amper_u0.gif"] and dropped["Amper_u0.gif"].startswith("few colours"), dropped


def test_real_dark_underwater_photos_are_kept():
    found = classify2_photos()
    images = [decoded(found[name].read_bytes()) for name in DARK_PHOTOS]
    measured = [photo_filters.measure(image) for image in images]
    # Mostly black: whole-picture chroma is low (one was dropped at 6), the fish's colour is not.
    assert [m["chroma"] for m in measured] == [7.35, 5.69]
    assert all(m["midtone_chroma"] > 30 for m in measured)
    assert reasons(*images) == ["", ""]


# --- made-up pictures -------------------------------------------------------------------


def test_dark_underwater_scene_with_a_small_fish_is_kept():
    scene = dark_underwater_scene()
    pixels = np.asarray(scene, dtype=np.int16)
    assert (pixels.max(axis=2) < photo_filters.DARK_BELOW).mean() > 0.85  # mostly near-black
    measured = photo_filters.measure(scene)
    assert measured["chroma"] < OLD_CHROMA_LIMIT  # the old flag would have dropped it
    assert measured["midtone_chroma"] > 30
    assert reasons(scene) == [""]


def test_drawing_is_dropped_for_its_colours_and_flat_areas():
    (reason,) = reasons(drawing())
    assert reason.startswith("few colours (")
    assert "large flat areas" in reason and "greyscale" not in reason
    measured = photo_filters.measure(drawing())
    assert measured["colours"] <= 10 and measured["flat_fraction"] > 0.9


def test_stamp_is_dropped_for_its_colours():
    measured = photo_filters.measure(stamp())
    assert measured["colours"] < 64 and measured["midtone_chroma"] > 50
    (reason,) = reasons(stamp())
    assert reason.startswith(f"few colours ({measured['colours']} < 128)") and "greyscale" not in reason
