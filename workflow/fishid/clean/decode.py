"""Decode what the web serves into one plain 8-bit RGB picture, or say why it cannot be.

Every image goes through the same steps: refuse decompression bombs from the header,
verify, fully load (a truncated file fails here, not later in training), take the first
frame of an animation, apply the EXIF orientation, then bring any mode to RGB: palette
and GIF, alpha (composited on a neutral grey), CMYK (through its ICC profile when it
has one), 16-bit and float greyscale (rescaled, not clipped) and plain greyscale.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps

from fishid.download.store import pillow_limit_lifted, pixel_refusal

# Mid grey: transparent parts become neither black nor white, which would read as a
# dark or bright background (and would make a cut-out look like a studio photo).
BACKGROUND = (128, 128, 128)
_SRGB = ImageCms.createProfile("sRGB")


class DecodeError(Exception):
    """The image cannot be used; the message is the reason recorded for it."""


@dataclass
class Decoded:
    image: Image.Image  # RGB, 8 bits per channel, orientation applied
    format: str
    mode: str  # the mode it was stored in, before conversion
    width: int  # stored size, before any reduction for decoding
    height: int
    frames: int


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    reason = pixel_refusal(width, height, max_pixels)
    if reason:
        raise DecodeError(reason)


def _open(data: bytes) -> Image.Image:
    with pillow_limit_lifted():
        return Image.open(io.BytesIO(data))


def decode(data: bytes, max_pixels: int, at_least: int = 0) -> Decoded:
    """Decode image bytes; with `at_least`, a JPEG may decode at a reduced scale no smaller than that."""
    try:
        return _decode(data, max_pixels, at_least)
    except DecodeError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt data; all mean the same here
        raise DecodeError(f"undecodable: {type(error).__name__}: {error}") from error


def _decode(data: bytes, max_pixels: int, at_least: int) -> Decoded:
    with _open(data) as probe:
        check_pixels(*probe.size, max_pixels)
        probe.verify()
    image = _open(data)
    stored = {"format": image.format or "", "mode": image.mode, "width": image.width, "height": image.height}
    frames = getattr(image, "n_frames", 1)
    if at_least and image.format == "JPEG":
        # DCT scaling: a 4000 px photo decodes at 1/2 to 1/8 scale, still from every byte,
        # several times faster; the result is never smaller than at_least on either side.
        image.draft(image.mode, (at_least, at_least))
    image.seek(0)
    image.load()
    rgb = to_rgb(ImageOps.exif_transpose(image))
    return Decoded(rgb, frames=frames, **stored)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB."""
    icc = image.info.get("icc_profile")
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _deepen_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif "transparency" in image.info and image.mode in ("L", "RGB"):
        image = image.convert("LA" if image.mode == "L" else "RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    if icc and image.mode in ("CMYK", "RGB"):
        converted = _through_profile(image, icc)
        if converted is not None:
            return converted
    return image.convert("RGB")


def _through_profile(image: Image.Image, icc: bytes) -> Image.Image | None:
    """Colours as the embedded profile means them, in sRGB; None if the profile is unusable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return image
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None


def _deepen_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale scaled into 0-255 (a plain convert would clip it to white)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        scaled = values / 257
    elif image.mode == "F" and values.size and values.max() <= 1.0:
        scaled = values * 255
    elif values.size and values.max() > 255:
        scaled = values / 257
    else:
        scaled = values
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
