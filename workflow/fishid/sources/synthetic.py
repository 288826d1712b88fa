"""Offline synthetic clownfish photos: the pipeline's embedded default source.

A small table of species patterns (bar count, bar width, black margin width and body /
fin / tail colours; optionally how individuals vary) is turned into photo-like pictures
of clownfish. Each picture is fully described by its pattern, its size and a dict of
per-image parameters; `list_records` encodes all three into the record's `media_url`, so
a record alone is enough to render its image again (`render_url`) and to serve its bytes
(`served_bytes`, what the download stage stores).

The pieces: fishid.sources.synthetic_render draws the plain (v1) picture,
synthetic_scene adds photo-like difficulty (the source's `scenes`, `nuisances` and
`individuals`), synthetic_defects plants dirty data (`defects`) and serves the bytes.
A source without those keys lists exactly the v1 pictures.
"""

from __future__ import annotations

import re
import zlib
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from fishid.sources import synthetic_defects as defects_module
from fishid.sources import synthetic_scene as scene
from fishid.sources.base import Listing, SourceKind
from fishid.sources.synthetic_render import (  # noqa: F401  (the module's public names, as before the split)
    BACKGROUNDS,
    MAX_SIDE,
    URL_PREFIX,
    _fish_layer,
    bar_positions,
    check_size,
    decode_url,
    encode_url,
    sample_params,
)
from fishid.tables import HIGHER_RANKS

PATTERN_COLUMNS = scene.PATTERN_KEYS
# A species' ranks above it (kingdom ... genus) and how individuals vary: optional.
OPTIONAL_COLUMNS = (*HIGHER_RANKS, *scene.VARIATION_COLUMNS)
GENERATOR = "fishid synthetic generator v1"
# Pictures with photo-like difficulty or planted defects (a source with scenes, nuisances,
# individuals or defects).
GENERATOR_V2 = "fishid synthetic generator v2"
DEFECTS = defects_module.DEFECTS

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


# --------------------------------------------------------------------------- table


def load_patterns(path) -> dict[str, dict]:
    """Read the species pattern table (TSV, header = PATTERN_COLUMNS, then any of
    OPTIONAL_COLUMNS) -> {taxon: pattern}.

    The optional rank columns (kingdom, phylum, class, order, family, genus) give the
    species' classification, under pattern["ranks"] (never drawn: the pictures and their
    URLs are the same with or without them). The others say how individuals vary (used by a
    source with `individuals: true`): `bar_counts` other bar counts and their shares
    ("2:0.15,4:0.05"), `bar_width_range` ("0.05-0.09") and `morphs`, colour morphs
    ("dark:0.2:#body:#fin:#tail;..."). A row gives them under pattern["variation"], only
    when it has any. Blank lines and lines starting with '#' are skipped. Bad rows raise
    ValueError naming the file, the line number and the bad column.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    header_no, header = None, None
    for no, line in enumerate(lines, start=1):
        if line.strip() and not line.startswith("#"):
            header_no, header = no, [h.strip() for h in line.split("\t")]
            break
    if header is None:
        raise ValueError(
            f"{path}: empty species pattern table, expected the tab-separated header {list(PATTERN_COLUMNS)}"
        )
    unknown = [h for h in header if h not in PATTERN_COLUMNS + OPTIONAL_COLUMNS]
    missing = [c for c in PATTERN_COLUMNS if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise ValueError(
            f"{path}: line {header_no}: bad header: unknown column(s) {unknown}, missing column(s) {missing}; "
            f"expected the tab-separated columns {list(PATTERN_COLUMNS)} (and optionally {list(OPTIONAL_COLUMNS)})"
        )
    # Editors drop trailing tabs: a row may stop before its trailing optional columns.
    shortest = max([i + 1 for i, h in enumerate(header) if h in PATTERN_COLUMNS])

    patterns: dict[str, dict] = {}
    for no, line in enumerate(lines[header_no:], start=header_no + 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if not shortest <= len(fields) <= len(header):
            raise ValueError(f"{path}: line {no}: expected {len(header)} tab-separated columns, got {len(fields)}")
        row = dict(zip(header, fields + [""] * (len(header) - len(fields))))
        pattern = _parse_row(row, _row_error(path, no))
        if pattern["taxon"] in patterns:
            raise ValueError(f"{path}: line {no}: column 'taxon': duplicate taxon {pattern['taxon']!r}")
        patterns[pattern["taxon"]] = pattern
    if not patterns:
        raise ValueError(f"{path}: species pattern table has a header but no species rows")
    return patterns


def _row_error(path, line_no):
    return lambda col, msg: ValueError(f"{path}: line {line_no}: column {col!r}: {msg}")


def _parse_row(row: dict[str, str], error) -> dict:
    taxon = row["taxon"]
    if not taxon:
        raise error("taxon", "empty taxon name")
    try:
        bars = int(row["bars"])
    except ValueError:
        raise error("bars", f"{row['bars']!r} is not an integer 0-5") from None
    if not 0 <= bars <= 5:
        raise error("bars", f"{bars} is not an integer 0-5")
    bar_width = _parse_fraction(row, "bar_width", 0.0 if bars == 0 else 0.02, 0.15, error)
    bar_margin = _parse_fraction(row, "bar_margin", 0.0, 0.05, error)
    pattern = {"taxon": taxon, "bars": bars, "bar_width": bar_width, "bar_margin": bar_margin}
    for col in ("body_color", "fin_color", "tail_color"):
        if not _COLOR_RE.match(row[col]):
            raise error(col, f"{row[col]!r} is not a colour of the form #rrggbb")
        pattern[col] = row[col].lower()
    variation = scene.parse_variation(row, bars, error)
    if variation:
        pattern["variation"] = variation
    ranks = {rank: row.get(rank, "") for rank in HIGHER_RANKS}
    if any(ranks.values()):
        # The row's taxon is the species: its records' species rank.
        pattern["ranks"] = ranks | {"species": taxon}
    return pattern


def _parse_fraction(row, col, lo, hi, error) -> float:
    try:
        value = float(row[col])
    except ValueError:
        raise error(col, f"{row[col]!r} is not a number") from None
    if not (lo <= value <= hi):  # also rejects nan
        raise error(col, f"{value} is outside {lo}-{hi} (fraction of body length)")
    return value


# --------------------------------------------------------------------------- records


def _taxon_slug(taxon: str) -> str:
    return taxon.replace(" ", "_")


def _image_rng(seed: int, taxon: str, index: int, *stream: int) -> np.random.Generator:
    # crc32 is stable across runs and Python versions, unlike hash(). The v1 pose draws
    # from (seed, taxon, index); the scene and the individual from stream 1 beside it.
    key = [int(seed), zlib.crc32(taxon.encode("utf-8")), int(index), *stream]
    return np.random.default_rng(np.random.SeedSequence(key))


def _record(native: str, taxon: str, media_url: str, creator: str, **fields) -> dict:
    return {
        "record_id": f"synthetic:{native}",
        "source": "synthetic",
        "taxon": taxon,
        "source_taxon": taxon,
        "media_url": media_url,
        "page_url": "",
        "license": "CC0-1.0",
        "rights_holder": "fishid contributors",
        "creator": creator,
        "occurrence_id": f"synthetic:{native}",
        "basis_of_record": "MachineObservation",
        "dataset_key": "synthetic",
    } | fields


def list_records(
    patterns: dict[str, dict],
    counts: dict[str, int],
    seed: int,
    size=(160, 120),
    realism: dict | None = None,
    defects: dict[str, int] | None = None,
) -> list[dict]:
    """One record per picture, in taxon order of `counts`, then index; then the planted
    defects (fishid.sources.synthetic_defects), if any.

    `realism` (scene.check_realism of the source's config) draws scenes, nuisances and
    individuals; None gives the v1 pictures. Per-image randomness derives from (seed,
    taxon, index) only, so adding a species or changing one count leaves every other
    image unchanged.
    """
    unknown = [t for t in counts if t not in patterns]
    if unknown:
        raise ValueError(
            f"synthetic source: no pattern for taxon {', '.join(map(repr, unknown))}; "
            f"known taxa: {', '.join(sorted(patterns))}"
        )
    defects = defects_module.check_defects(defects)
    creator = GENERATOR if realism is None and not any(defects.values()) else GENERATOR_V2
    records, ordinary = [], []
    for taxon, count in counts.items():
        if int(count) < 0:
            raise ValueError(f"synthetic source: negative image count {count} for taxon {taxon!r}")
        slug = _taxon_slug(taxon)
        for index in range(int(count)):
            fish, params = scene.sample_photo(
                patterns[taxon], realism, _image_rng(seed, taxon, index), _image_rng(seed, taxon, index, 1)
            )
            url = encode_url(fish, params, size)
            record = _record(f"{slug}-{index:05d}", taxon, url, creator, **patterns[taxon].get("ranks", {}))
            records.append(record)
            ordinary.append((record["record_id"], taxon, fish, params, tuple(size)))
    for item in defects_module.plant(patterns, counts, seed, size, realism, defects, ordinary):
        url = encode_url(item["pattern"], item["params"], item["size"])
        ranks = patterns[item["taxon"]].get("ranks", {})
        records.append(_record(item["native"], item["taxon"], url, creator, **ranks, **item["fields"]))
    return records


def render(pattern: dict, params: dict, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Deterministic RGB image from pattern + params (same inputs -> identical pixels)."""
    return defects_module.picture(pattern, params, size)


def render_url(media_url: str) -> Image.Image:
    """Render the image that a 'synthetic:' media_url describes."""
    pattern, params, size = decode_url(media_url)
    return render(pattern, params, size)


def served_bytes(media_url: str) -> bytes:
    """The bytes a download of a 'synthetic:' media_url gets: its image as a JPEG (quality 90
    unless its params say otherwise), or what a planted defect serves instead."""
    pattern, params, size = decode_url(media_url)
    return defects_module.serve(pattern, params, size)


def source_listing(spec: dict, context) -> Listing:
    """The synthetic source's listing, as every source kind gives it (SourceKind.list_records)."""
    size = tuple(spec.get("size", (160, 120)))
    check_size(size, f"sources.{context.name}.size")
    realism = scene.check_realism(spec)
    patterns = load_patterns(spec["patterns"])
    records = list_records(patterns, spec["counts"], spec.get("seed", context.seed), size, realism, spec.get("defects"))
    if context.name != "synthetic":
        # Ids are unique across sources: a second synthetic source (the demo's museum) names its own.
        for record in records:
            for key in ("record_id", "occurrence_id"):
                record[key] = context.name + record[key].removeprefix("synthetic")
    return Listing(records)


def local_inputs(spec: dict) -> list[str]:
    return [spec["patterns"]]


def cite(spec: dict, facts: dict, listed: date) -> tuple[str, str]:
    return f"Synthetic photos rendered by fishid from {spec.get('patterns', '')} (CC0-1.0).", ""


KIND = SourceKind(
    "synthetic",
    source_listing,
    cite,
    title="synthetic photos",
    local_inputs=local_inputs,
    scheme="synthetic",
    served_bytes=served_bytes,
)
