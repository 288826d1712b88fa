"""Decoding what the web serves: every mode comes out as 8-bit RGB, or a clear reason."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fishid.clean.decode import BACKGROUND, DecodeError, decode

LIMIT = 89_478_485


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixel(decoded, xy=(0, 0)):
    return decoded.image.getpixel(xy)


def test_rgba_is_composited_on_neutral_grey():
    image = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (0, 0, 20, 30))  # left half fully transparent
    decoded = decode(encoded(image, "PNG"), LIMIT)
    assert decoded.image.mode == "RGB" and decoded.mode == "RGBA"
    assert pixel(decoded, (5, 5)) == BACKGROUND
    assert pixel(decoded, (30, 5)) == (255, 0, 0)


def test_half_transparent_greyscale_with_alpha_blends():
    image = Image.new("LA", (10, 10), (255, 128))
    decoded = decode(encoded(image, "PNG"), LIMIT)
    assert all(abs(c - (255 + 128) / 2) <= 1 for c in pixel(decoded))


def test_palette_with_transparent_index_and_gif():
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(0, (0, 0, 10, 20))
    decoded = decode(encoded(image, "GIF", transparency=0), LIMIT)
    assert decoded.format == "GIF" and decoded.mode == "P"
    assert pixel(decoded, (2, 2)) == BACKGROUND and pixel(decoded, (15, 2)) == (10, 200, 30)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("P", (16, 16), i) for i in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode(data, LIMIT)
    assert decoded.frames == 2 and pixel(decoded) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode(encoded(image, "JPEG", quality=95), LIMIT)
    assert decoded.mode == "CMYK" and decoded.image.mode == "RGB"
    red, green, blue = pixel(decoded, (16, 16))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    values = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    decoded = decode(encoded(Image.fromarray(values), "PNG"), LIMIT)
    assert decoded.mode.startswith("I")
    assert pixel(decoded) == (128, 128, 128)


def test_greyscale_becomes_three_equal_channels():
    decoded = decode(encoded(Image.new("L", (10, 10), 77), "JPEG"), LIMIT)
    assert decoded.image.mode == "RGB" and pixel(decoded) == (77, 77, 77)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), "white")
    image.paste((0, 0, 0), (0, 0, 10, 20))  # black on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display 90 degrees clockwise
    decoded = decode(encoded(image, "JPEG", exif=exif), LIMIT)
    assert (decoded.width, decoded.height) == (60, 20)  # as stored
    assert decoded.image.size == (20, 60)
    assert sum(pixel(decoded, (10, 2))) < 60 and sum(pixel(decoded, (10, 57))) > 700


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims a huge size."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_decompression_bombs_are_refused_before_decoding():
    with pytest.raises(DecodeError, match=r"decompression bomb: 100000x100000 = 10,000,000,000 pixels, over"):
        decode(_png_claiming(100_000, 100_000), LIMIT)
    with pytest.raises(
        DecodeError, match=r"decompression bomb: 300x300 = 90,000 pixels, over clean.max_pixels \(50,000\)"
    ):
        decode(encoded(Image.new("RGB", (300, 300)), "PNG"), 50_000)


def test_truncated_and_non_images_say_undecodable():
    data = encoded(Image.effect_noise((200, 200), 40).convert("RGB"), "JPEG")
    with pytest.raises(DecodeError, match="^undecodable: .*truncated"):
        decode(data[: len(data) // 2], LIMIT)
    with pytest.raises(DecodeError, match="^undecodable: UnidentifiedImageError"):
        decode(b"<html>not found</html>", LIMIT)


def test_jpegs_decode_reduced_but_never_below_the_size_asked_for():
    data = encoded(Image.effect_noise((1600, 1200), 30).convert("RGB"), "JPEG")
    decoded = decode(data, LIMIT, at_least=160)
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert min(decoded.image.size) >= 160 and decoded.image.size[0] < 1600


def test_clean_decode_of_a_file_raises_what_pillow_raised(tmp_path):
    from PIL import UnidentifiedImageError

    from fishid.clean import stage as clean

    (tmp_path / "page.jpg").write_text("<html>Not found</html>")
    with pytest.raises(UnidentifiedImageError):
        clean.decode(tmp_path / "page.jpg")
    Image.new("P", (12, 10)).save(tmp_path / "ok.gif")
    assert clean.decode(tmp_path / "ok.gif").mode == "RGB"
