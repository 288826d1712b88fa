"""Dirty data planted in the synthetic source, so that every cleaning rule has work in the demo.

A source's `defects: {kind: count}` adds records beside the ordinary photos. Each planted
record says so: its params (in its media_url) hold `"defect": kind` (and `"copy_of":
<record id>` where it copies another record), and its record id is
`synthetic:defect-<kind>-<nn>`. The kinds, and what the pipeline is meant to do with them:

- label_conflict: one photo filed under two species (count: pairs; both records planted) -> dropped, label conflict
- near_duplicate: a re-encoded, slightly cropped, smaller copy of an ordinary photo -> dropped, near duplicate
- drawing, stamp: flat-colour pictures served as PNG -> not a photo (few colours, flat areas)
- greyscale: a greyscale scan of an observation sheet -> not a photo (greyscale)
- preserved_specimen: basis of record PreservedSpecimen -> dropped by clean.drop_basis_of_record
- ethanol: preparations "ethanol" -> dropped by clean.drop_preparations
- truncated: the first part of a JPEG -> undecodable
- html: an HTML page where the image should be -> not an image (download)
- licence: "All rights reserved" or CC-BY-ND -> refused by the licence policy (download)
- same_occurrence: several photos of one fish, one occurrence id -> kept, in one group
- excluded: ordinary photos whose record ids config/exclusions.tsv lists -> excluded by user
- too_small: a fifth of the configured size -> too small
- mislabelled: a photo of one species filed under another (the params' `drawn_as` says which it shows),
  drawn without nuisances -> kept: the likely-label-error queue (rule label_issues) must rank it near the top

Pictures other than photos (styles drawing, stamp, greyscale) and the served bytes of every
record (JPEG at its quality, PNG, truncated, HTML, a near copy) are made here.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, ImageDraw

from fishid.sources import synthetic_render as draw
from fishid.sources import synthetic_scene as scene

DEFECTS = (
    "label_conflict",
    "near_duplicate",
    "drawing",
    "stamp",
    "greyscale",
    "preserved_specimen",
    "ethanol",
    "truncated",
    "html",
    "licence",
    "same_occurrence",
    "excluded",
    "too_small",
    # Last: a kind's place is its offset among the species, so earlier kinds stay as they were.
    "mislabelled",
)
REFUSED_LICENCES = ("All rights reserved", "CC-BY-ND-4.0")
SAME_OCCURRENCE = "synthetic:defect-same_occurrence"
PLANTED_AMONG = 4
DEFAULT_JPEG_QUALITY = 90
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Photo not found</title></head>\n"
    b"<body><h1>404</h1><p>The photo you asked for has moved. Search our collection instead.</p></body></html>\n"
)
_INK = (0.08, 0.07, 0.08)
_STAMP_FIELDS = np.array([[0.55, 0.75, 0.85], [0.95, 0.85, 0.55], [0.7, 0.85, 0.6], [0.85, 0.65, 0.7]], np.float32)


def record_id(kind: str, number: int) -> str:
    return f"synthetic:defect-{kind}-{number:02d}"


def check_defects(defects) -> dict[str, int]:
    """The `defects` mapping, checked: known kinds, counts >= 0."""
    if defects is None:
        return {}
    if not isinstance(defects, dict):
        raise ValueError(f"sources.synthetic.defects: {defects!r} must map defect kinds to counts")
    for kind, count in defects.items():
        if kind not in DEFECTS:
            raise ValueError(f"sources.synthetic.defects: unknown defect kind {kind!r}; known: {', '.join(DEFECTS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"sources.synthetic.defects.{kind}: {count!r} must be a whole number >= 0")
    return dict(defects)


# --------------------------------------------------------------------------- planting


def plant(patterns, counts, seed, size, realism, defects, ordinary) -> list[dict]:
    """The planted records' contents, in DEFECTS order: dicts of native id, taxon, pattern,
    params, size and the record fields that differ from an ordinary photo's.

    `ordinary`: (record_id, taxon, pattern, params, size) of the ordinary photos, which
    near_duplicate copies."""
    defects = check_defects(defects)
    # Among the first species of the pattern table that have photos (the demo's table lists the
    # study's species first), so that the defects reach the datasets that are trained on. Not the
    # first of `counts`: rule list_source hands the spec over as JSON with sorted keys, which put
    # the demo's defects among A. akindynos, bicinctus, chrysopterus and clarkii, two of them the
    # pool's pre-training species, and every one a look-alike of the next (two bars, brown to
    # orange): a chrysopterus filed as clarkii looks like clarkii's two-barred morph.
    taxa = [taxon for taxon in patterns if int(counts.get(taxon, 0)) > 0][:PLANTED_AMONG]
    if not taxa and any(defects.values()):
        raise ValueError("sources.synthetic.defects: no species has photos to plant defects among")
    planted = []
    for offset, kind in enumerate(DEFECTS):
        count = defects.get(kind, 0)
        if not count:
            continue
        if kind in ("label_conflict", "mislabelled") and len(taxa) < 2:
            raise ValueError(f"sources.synthetic.defects.{kind}: needs photos of two species at least")
        maker = globals()[f"_plant_{kind}"]
        for item in maker(patterns, taxa, offset, seed, size, realism, count, ordinary):
            item["params"] = {**item["params"], "defect": kind}
            planted.append(item)
    return planted


def _rngs(seed, kind, number):
    key = zlib.crc32(f"defect:{kind}".encode())
    return [np.random.default_rng(np.random.SeedSequence([int(seed), key, number, stream])) for stream in range(3)]


def _fresh(patterns, taxon, seed, kind, number, realism):
    """A new photo (pattern, params, extra rng) for planted record `number` of `kind`."""
    pose, look, extra = _rngs(seed, kind, number)
    pattern, params = scene.sample_photo(patterns[taxon], realism, pose, look)
    return pattern, params, extra


def _item(kind, number, taxon, pattern, params, size, **fields):
    return {"native": f"defect-{kind}-{number:02d}", "taxon": taxon, "pattern": pattern, "params": params} | {
        "size": tuple(size),
        "fields": fields,
    }


def _plant_label_conflict(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for pair in range(count):
        first, second = taxa[(offset + pair) % len(taxa)], taxa[(offset + pair + 1) % len(taxa)]
        pattern, params, _ = _fresh(patterns, first, seed, "label_conflict", pair, realism)
        yield _item("label_conflict", 2 * pair, first, pattern, params, size)
        copy = {**params, "copy_of": record_id("label_conflict", 2 * pair)}
        yield _item("label_conflict", 2 * pair + 1, second, pattern, copy, size)


def _plant_near_duplicate(patterns, taxa, offset, seed, size, realism, count, ordinary):
    ordinary = [photo for photo in ordinary if photo[1] in taxa]
    if not ordinary:
        return
    rng = _rngs(seed, "near_duplicate", 0)[2]
    picks = sorted(rng.choice(len(ordinary), size=min(count, len(ordinary)), replace=False))
    for number, pick in enumerate(picks):
        original_id, taxon, pattern, params, original_size = ordinary[pick]
        extra = _rngs(seed, "near_duplicate", number + 1)[2]
        # Smaller than its original, so that cleaning keeps the original (keep: largest); cropped
        # by at most 0.5 % a side: a 0.8 % crop of a wide, textured reef scene moved its hash by
        # 18 bits, beyond max_distance 12, where 0.4 % moved it by 8.
        copy = {"scale": extra.uniform(0.72, 0.88), "crop": list(extra.uniform(0, 0.005, 4)), "quality": 0}
        copy["quality"] = int(extra.integers(60, 86))
        params = {**params, "copy_of": original_id, "copy": draw._rounded(copy)}
        yield _item("near_duplicate", number, taxon, pattern, params, original_size)


def _plant_drawing(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, extra = _fresh(patterns, taxon, seed, "drawing", number, realism)
        paper = [float(v) for v in draw._rounded(list(extra.uniform(0.85, 0.98, 3)))]
        yield _item("drawing", number, taxon, pattern, _as_drawing(params, "drawing", paper), size)


def _plant_stamp(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, extra = _fresh(patterns, taxon, seed, "stamp", number, realism)
        params = _as_drawing(params, "stamp", [float(v) for v in _STAMP_FIELDS[number % len(_STAMP_FIELDS)]])
        params["value"] = int(extra.integers(5, 100))
        yield _item("stamp", number, taxon, pattern, params, size)


def _as_drawing(params, style, paper):
    pose = {key: params[key] for key in ("angle", "scale", "cx", "cy", "flip", "bend", "depth", "fin_spread")}
    return draw._rounded({**pose, "style": style, "serve": "png", "paper": paper, "seed": params["seed"]})


def _plant_greyscale(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, extra = _fresh(patterns, taxon, seed, "greyscale", number, realism)
        scan = {"paper": extra.uniform(0.82, 0.95), "lines": int(extra.integers(3, 7))}
        yield _item(
            "greyscale", number, taxon, pattern, {**params, "style": "greyscale", "scan": draw._rounded(scan)}, size
        )


def _specimen(patterns, taxon, seed, kind, number, in_ethanol):
    """A pale, faded fish lying on a tray: what a museum photographs."""
    pose, look, extra = _rngs(seed, kind, number)
    backdrop = "studio_black" if number % 2 else "studio_white"
    studio = {"individuals": False, "scenes": {backdrop: 1}, "nuisances": {}}
    pattern, params = scene.sample_photo(patterns[taxon], studio, pose, look)
    fade = extra.uniform(0.55, 0.8)
    brown = np.array([0.66, 0.58, 0.44])
    for key in ("body_color", "fin_color", "tail_color"):
        faded = draw._hex(pattern[key]) * (1 - fade) + brown * fade
        pattern[key] = "#" + "".join(f"{round(float(c) * 255):02x}" for c in np.clip(faded, 0, 1))
    params = {**params, "angle": extra.uniform(-3, 3), "bend": 0.0, "fin_spread": 0.8}
    if in_ethanol:
        params["tint"] = [1.0, 0.96, 0.78]  # the yellow of old alcohol
    return pattern, draw._rounded(params)


def _plant_preserved_specimen(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params = _specimen(patterns, taxon, seed, "preserved_specimen", number, False)
        yield _item("preserved_specimen", number, taxon, pattern, params, size, basis_of_record="PreservedSpecimen")


def _plant_ethanol(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params = _specimen(patterns, taxon, seed, "ethanol", number, True)
        # A citation of material, not a preserved specimen: the preparations alone must drop it.
        yield _item(
            "ethanol", number, taxon, pattern, params, size, basis_of_record="MaterialCitation", preparations="ethanol"
        )


def _plant_truncated(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, extra = _fresh(patterns, taxon, seed, "truncated", number, realism)
        params = {**params, "serve": "truncated", "keep": round(float(extra.uniform(0.35, 0.6)), 4)}
        yield _item("truncated", number, taxon, pattern, params, size)


def _plant_html(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, _ = _fresh(patterns, taxon, seed, "html", number, realism)
        yield _item("html", number, taxon, pattern, {**params, "serve": "html"}, size)


def _plant_licence(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, _ = _fresh(patterns, taxon, seed, "licence", number, realism)
        licence = REFUSED_LICENCES[number % len(REFUSED_LICENCES)]
        yield _item("licence", number, taxon, pattern, params, size, license=licence)


def _plant_same_occurrence(patterns, taxa, offset, seed, size, realism, count, ordinary):
    taxon = taxa[offset % len(taxa)]
    fish, scene_of_first = None, None
    for number in range(count):
        pattern, params, _ = _fresh(patterns, taxon, seed, "same_occurrence", number, realism)
        # One fish on one dive, photographed in several poses: the scene stays, the pose changes.
        fish = fish or pattern
        scene_of_first = scene_of_first or {k: v for k, v in params.items() if k not in _POSE}
        params = scene_of_first | {k: v for k, v in params.items() if k in _POSE}
        yield _item("same_occurrence", number, taxon, fish, params, size, occurrence_id=SAME_OCCURRENCE)


_POSE = ("angle", "scale", "cx", "cy", "flip", "bend", "fin_spread", "fish", "seed")


def _plant_excluded(patterns, taxa, offset, seed, size, realism, count, ordinary):
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, _ = _fresh(patterns, taxon, seed, "excluded", number, realism)
        yield _item("excluded", number, taxon, pattern, params, size)


def _plant_too_small(patterns, taxa, offset, seed, size, realism, count, ordinary):
    small = (max(8, int(size[0]) // 5), max(8, int(size[1]) // 5))
    for number in range(count):
        taxon = taxa[(offset + number) % len(taxa)]
        pattern, params, _ = _fresh(patterns, taxon, seed, "too_small", number, realism)
        yield _item("too_small", number, taxon, pattern, params, small)


# Scenes in which a fish may not be seen at all: a dark dive, a wide reef with a fish a dozen
# pixels long.
HIDING_SCENES = ("dark", "wide")


def _plant_mislabelled(patterns, taxa, offset, seed, size, realism, count, ordinary):
    # Without nuisances (occlusion, defocus, several fish...) and hiding scenes: a mislabel can
    # only be found where the photo shows its fish. In the demo a dark-scene A. clarkii half
    # hidden by tentacles and blurred, filed as A. perideraion, ranked 78th to 517th of 1,409 by
    # every model the queue has tried (its crop held a piece of the fish); another dark-scene
    # A. clarkii, which one draw's detector did not find, ranked 74th to 236th: what they tested
    # was the fish's visibility (a photo without a fish found goes to the detector's queue).
    shown = realism
    if realism:
        scenes = {name: w for name, w in realism["scenes"].items() if name not in HIDING_SCENES}
        shown = {**realism, "nuisances": {}, "scenes": scenes or {"anemone": 1}}
    for number in range(count):
        drawn, filed = taxa[(offset + number) % len(taxa)], taxa[(offset + number + 1) % len(taxa)]
        pattern, params, _ = _fresh(patterns, drawn, seed, "mislabelled", number, shown)
        yield _item("mislabelled", number, filed, pattern, {**params, "drawn_as": drawn}, size)


# --------------------------------------------------------------------------- pictures and bytes


def picture(pattern: dict, params: dict, size=(160, 120)) -> Image.Image:
    """The picture of pattern + params in its style: a photo (the default), a drawing, a stamp, a scan."""
    style = params.get("style", "photo")
    if style == "photo":
        return scene.render_photo(pattern, params, size)
    if style == "greyscale":
        return _scan(scene.render_photo(pattern, params, size), params["scan"])
    if style == "drawing":
        return Image.fromarray(draw._to_uint8(_drawn(pattern, params, size)))
    if style == "stamp":
        return _stamp(pattern, params, size)
    raise ValueError(f"unknown synthetic picture style {style!r} (photo, greyscale, drawing, stamp)")


def serve(pattern: dict, params: dict, size=(160, 120)) -> bytes:
    """The bytes a download of the picture gets: JPEG at its quality (90 unless the params
    say), PNG, a truncated JPEG, an HTML page, or a re-encoded smaller copy."""
    how = params.get("serve", "jpeg")
    if how == "html":
        return _HTML
    image = picture(pattern, params, size)
    quality = params.get("jpeg_quality", DEFAULT_JPEG_QUALITY)
    if "copy" in params:
        image, quality = copied(image, params["copy"]), params["copy"]["quality"]
    buffer = io.BytesIO()
    if how == "png":
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if how not in ("jpeg", "truncated"):
        raise ValueError(f"unknown synthetic serve {how!r} (jpeg, png, truncated, html)")
    image.save(buffer, format="JPEG", quality=int(quality))
    data = buffer.getvalue()
    return data[: int(len(data) * params["keep"])] if how == "truncated" else data


def copied(image: Image.Image, copy: dict) -> Image.Image:
    """A copy cropped by `crop` (left, top, right, bottom, fractions) and scaled by `scale`."""
    width, height = image.size
    left, top, right, bottom = copy["crop"]
    box = (round(left * width), round(top * height), width - round(right * width), height - round(bottom * height))
    cropped = image.crop(box)
    target = (max(1, round(cropped.width * copy["scale"])), max(1, round(cropped.height * copy["scale"])))
    return cropped.resize(target, Image.Resampling.LANCZOS)


def _drawn(pattern, params, size) -> np.ndarray:
    """A flat-colour drawing of the fish, inked outline, on plain paper (0-1 RGB)."""
    width, height = int(size[0]), int(size[1])
    img = np.empty((height, width, 3), np.float32)
    img[:] = np.asarray(params["paper"], np.float32)
    grid = draw.fish_grid(params, width, height, 1)
    if grid is None:
        return img
    u, v, (x0, x1, y0, y1) = grid
    part, _ = draw._draw_fish(u, v, pattern, params)
    palette = draw._palette(pattern, {"color_jitter": [1.0, 1.0, 1.0]})
    region = img[y0:y1, x0:x1]
    inside = part > 0
    region[inside] = palette[part][inside]
    edge = np.zeros_like(inside)
    edge[:, 1:] |= part[:, 1:] != part[:, :-1]
    edge[1:, :] |= part[1:, :] != part[:-1, :]
    region[edge & (inside | np.roll(inside, 1, axis=1) | np.roll(inside, 1, axis=0))] = _INK
    return img


def _stamp(pattern, params, size) -> Image.Image:
    """A postage stamp: perforated white paper, a coloured field with the drawn fish, a value."""
    width, height = int(size[0]), int(size[1])
    album = (70, 64, 60)
    image = Image.new("RGB", (width, height), album)
    pen = ImageDraw.Draw(image)
    margin, border = max(2, width // 20), max(3, width // 14)
    pen.rectangle([margin, margin, width - margin - 1, height - margin - 1], fill=(246, 244, 236))
    hole = max(1, width // 60)
    for x in range(margin, width - margin, 3 * hole):
        for y in (margin, height - margin - 1):
            pen.ellipse([x - hole, y - hole, x + hole, y + hole], fill=album)
    for y in range(margin, height - margin, 3 * hole):
        for x in (margin, width - margin - 1):
            pen.ellipse([x - hole, y - hole, x + hole, y + hole], fill=album)
    inner = (width - 2 * (margin + border), height - 2 * (margin + border))
    pose = {**params, "scale": 0.7, "cx": 0.5, "cy": 0.45, "angle": 0.0, "bend": 0.0}
    field = Image.fromarray(draw._to_uint8(_drawn(pattern, pose, inner)))
    image.paste(field, (margin + border, margin + border))
    pen.text((margin + border + 2, height - margin - border - 12), f"{params['value']}c", fill=(20, 20, 24))
    return image


def _scan(photo: Image.Image, scan: dict) -> Image.Image:
    """A greyscale scan of an observation sheet: the photo pasted on paper among lines of text."""
    width, height = photo.size
    paper = round(scan["paper"] * 255)
    sheet = Image.new("L", (width, height), paper)
    small = photo.convert("L").resize((max(1, width * 3 // 5), max(1, height * 3 // 5)), Image.Resampling.LANCZOS)
    sheet.paste(small, (width // 20, height // 12))
    pen = ImageDraw.Draw(sheet)
    left = width // 20 + small.width + width // 20
    for line in range(scan["lines"]):
        y = height // 10 + line * max(4, height // 12)
        pen.rectangle([left, y, width - width // 20, y + max(1, height // 60)], fill=paper - 150)
    for line in range(2):
        y = height * 3 // 4 + line * max(4, height // 12)
        pen.rectangle([width // 20, y, width * 4 // 5, y + max(1, height // 60)], fill=paper - 150)
    grain = np.random.default_rng(int(scan["lines"]) + width).normal(0, 2.0, (height, width))
    return Image.fromarray(np.clip(np.asarray(sheet, np.float32) + grain + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
