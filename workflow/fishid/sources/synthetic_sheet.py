"""A sheet of example synthetic photos: each scene, each nuisance, the individuals and
look-alikes, and each planted defect, labelled, in one PNG (PIL only).

    python -m fishid.sources.synthetic_sheet config/config.yaml docs/demo_photos.png

Every picture is decoded from the bytes a download would get (served_bytes), so JPEG
artefacts, a truncated file and a too-small image show as the pipeline sees them.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFile

from fishid.sources import synthetic
from fishid.sources import synthetic_defects as defects
from fishid.sources import synthetic_scene as scene

THUMB = (112, 84)
_GAP, _CAPTION, _TITLE = 4, 11, 14
_BACKDROP = (236, 236, 232)


def decoded(data: bytes) -> Image.Image:
    """What served bytes look like: a truncated JPEG as far as it goes, a non-image as a note."""
    if not data.startswith((b"\xff\xd8", b"\x89PNG")):
        note = Image.new("RGB", THUMB, (250, 250, 250))
        ImageDraw.Draw(note).text((6, 6), data[:60].decode("ascii", "replace").replace("\n", " ")[:18], fill=(0, 0, 0))
        ImageDraw.Draw(note).text((6, 30), "(not an image)", fill=(160, 0, 0))
        return note
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _rngs(seed, *key):
    return [np.random.default_rng(np.random.SeedSequence([int(seed), *key, stream])) for stream in range(2)]


def _forced(pattern, realism, size, seed, *key):
    fish, params = scene.sample_photo(pattern, realism, *_rngs(seed, *key))
    return decoded(defects.serve(fish, params, size)), fish


def _with_morph(pattern, name):
    morph = next(m for m in pattern["variation"]["morphs"] if m["name"] == name)
    return {**pattern, "variation": {**pattern["variation"], "morphs": [{**morph, "share": 1.0}], "bar_counts": []}}


def examples(spec: dict, seed: int, per_row: int = 4) -> list[tuple[str, list[tuple[str, Image.Image]]]]:
    """Rows of (title, [(caption, picture)]) for a synthetic source's config."""
    patterns = synthetic.load_patterns(spec["patterns"])
    size = tuple(spec.get("size", (160, 120)))
    taxa = [t for t, n in spec["counts"].items() if n > 0][:4]
    short = {t: t.split()[-1] for t in patterns}
    rows = []
    for i, name in enumerate(scene.SCENES):
        realism = {"individuals": True, "scenes": {name: 1}, "nuisances": {}}
        pictures = [_forced(patterns[taxa[k % len(taxa)]], realism, size, seed, 1, i, k) for k in range(per_row)]
        rows.append((f"scene: {name}", [(short[fish["taxon"]], img) for img, fish in pictures]))
    for i, name in enumerate(scene.NUISANCES):
        realism = {"individuals": True, "scenes": {"anemone": 1}, "nuisances": {name: 1}}
        pictures = [_forced(patterns[taxa[k % len(taxa)]], realism, size, seed, 2, i, k) for k in range(per_row)]
        rows.append((f"nuisance: {name}", [(short[fish["taxon"]], img) for img, fish in pictures]))
    plain = {"individuals": True, "scenes": {"anemone": 1}, "nuisances": {}}
    looks = []
    for k, taxon in enumerate(
        ["Amphiprion ocellaris", "Amphiprion clarkii", "Amphiprion percula", "Amphiprion clarkii"]
    ):
        if taxon not in patterns:
            continue
        pattern = patterns[taxon]
        if k == 1 and "morphs" in pattern.get("variation", {}):
            pattern = _with_morph(pattern, "orange")
        if k == 3 and "morphs" in pattern.get("variation", {}):
            pattern = _with_morph(pattern, "dark")
        img, fish = _forced(pattern, plain, size, seed, 3, 0)  # one pose for all: only the fish differs
        looks.append((f"{short[taxon]} {fish.get('morph', '')}".strip(), img))
    rows.append(("look-alikes (same pose)", looks))
    planted = synthetic.list_records(
        patterns, dict.fromkeys(taxa, 3), seed, size, scene.check_realism(spec), dict.fromkeys(defects.DEFECTS, 2)
    )
    for kind in defects.DEFECTS:
        mine = [r for r in planted if r["record_id"].startswith(f"synthetic:defect-{kind}-")][:per_row]
        row = []
        for record in mine:
            caption = short[record["taxon"]]
            if kind == "licence":
                caption = record["license"][:18]
            row.append((caption, decoded(synthetic.served_bytes(record["media_url"]))))
        rows.append((f"defect: {kind}", row))
    return rows


def sheet(rows, columns: int = 2) -> Image.Image:
    """The rows laid out in `columns` blocks side by side, each a title over its pictures."""
    per_row = max(len(pictures) for _, pictures in rows)
    block_w = per_row * (THUMB[0] + _GAP) + _GAP
    block_h = _TITLE + THUMB[1] + _CAPTION + 2 * _GAP
    lines = -(-len(rows) // columns)
    image = Image.new("RGB", (columns * block_w, lines * block_h), _BACKDROP)
    pen = ImageDraw.Draw(image)
    for n, (title, pictures) in enumerate(rows):
        x0, y0 = (n // lines) * block_w, (n % lines) * block_h
        pen.text((x0 + _GAP, y0 + 2), title, fill=(20, 20, 60))
        for k, (caption, picture) in enumerate(pictures):
            x, y = x0 + _GAP + k * (THUMB[0] + _GAP), y0 + _TITLE
            tile = picture.copy()
            if tile.width > THUMB[0] or tile.height > THUMB[1]:
                tile.thumbnail(THUMB, Image.Resampling.LANCZOS)
            image.paste(tile, (x, y))
            pen.text((x, y + THUMB[1] + 1), caption, fill=(40, 40, 40))
    return image


def write(image: Image.Image, path, colours: int = 128) -> None:
    """As a palette PNG: a sheet of photos in 24-bit PNG would be megabytes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a configuration with a synthetic source (config/config.yaml)")
    parser.add_argument("output", help="the PNG to write (docs/demo_photos.png)")
    parser.add_argument("--source", default="synthetic", help="the synthetic source's name in the configuration")
    parser.add_argument("--per-row", type=int, default=4)
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    spec = config["sources"][args.source]
    write(sheet(examples(spec, config.get("seed", 0), args.per_row)), args.output)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
