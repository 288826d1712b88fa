"""Which files the review app may serve: images under the store and the results folder,
nothing else (no ../, no symlink that leads out, no other kind of file); and which folders
the Predict page may label: those under the project or the configured review.predict_roots."""

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


def predict_folder(root, folder: str, roots: list[str]) -> Path:
    """`folder` (relative to the project `root`, or absolute) with ../ and symbolic links
    resolved, if it lies under one of `roots` (the same); ValueError otherwise, before
    anything in it is listed, so that the page neither lists nor walks the rest of the machine."""
    root = Path(root).resolve()
    allowed = [(root / r).resolve() for r in roots]
    if "\x00" in folder:
        raise ValueError("the folder name holds a NUL character")
    target = (root / folder).resolve()
    if not any(target.is_relative_to(a) for a in allowed):
        raise ValueError(
            f"{folder}: refused, outside the folders the Predict page may read ({', '.join(map(str, allowed))}); "
            "put the photos under the project folder, or add their folder to review.predict_roots in the configuration"
        )
    return target
