"""Which files the review app may serve: images under the store and the results folder,
nothing else (no ../, no symlink that leads out, no other kind of file)."""

from pathlib import Path

AREAS = {"store": "resources/images", "results": "results"}
# Raster images only: an SVG can carry script.
SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def served_file(root, area: str, relative: str) -> Path | None:
    """The file `relative` names under the area's folder, or None when it is not one to serve."""
    if area not in AREAS or "\x00" in relative:
        return None
    base = Path(root, AREAS[area]).resolve()
    # resolve() follows every symlink and ../ first: what is left must still lie under the area.
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or target.suffix.lower() not in SUFFIXES or not target.is_file():
        return None
    return target


def image_url(area: str, relative: str) -> str:
    return f"/file/{area}/{relative}"
