"""The content-addressed image store: a photo's SHA-256 is its identity and its path."""

import errno
import hashlib
import io
import logging
import os
import socket
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from fishid.config import default
from fishid.tables import created_mode

log = logging.getLogger(__name__)

# clean.max_pixels' default: the download refuses a bomb its header declares, the clean stage
# any other (fishid.clean.decode).
MAX_PIXELS = default("clean", "max_pixels")
# Pillow's own pixel limit is one global: it is lifted (ours applies instead) one thread at a time.
_PILLOW_LIMIT = threading.Lock()

# Temporary files carry the writer's host and process id, so that a later run can tell
# the leftovers of a killed writer from the files of a writer still at work.
_PART = ".part-"

# Magic bytes decide the extension, never the URL or the server's content type.
_SIGNATURES = [
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"GIF87a", "gif", "image/gif"),
    (b"GIF89a", "gif", "image/gif"),
    (b"RIFF", "webp", "image/webp"),
    (b"II*\x00", "tif", "image/tiff"),
    (b"MM\x00*", "tif", "image/tiff"),
    (b"BM", "bmp", "image/bmp"),
]


def sniff_image(data: bytes) -> tuple[str, str] | None:
    """(extension, content type) from the leading bytes, or None if not a known image format."""
    for magic, ext, content_type in _SIGNATURES:
        if data.startswith(magic):
            if ext == "webp" and data[8:12] != b"WEBP":
                continue
            return ext, content_type
    return None


def pixel_refusal(width: int, height: int, max_pixels: int) -> str:
    """Why an image of this size is refused as a decompression bomb, or ""."""
    if width * height <= max_pixels:
        return ""
    return f"decompression bomb: {width}x{height} = {width * height:,} pixels, over clean.max_pixels ({max_pixels:,})"


@contextmanager
def pillow_limit_lifted():
    """Pillow's own pixel limit off for the block: pixel_refusal applies ours, from the header,
    before anything is decoded. The limit is one global, so one thread at a time lifts it."""
    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the image's header declares them, read without decoding a pixel;
    None when Pillow cannot read the header (the clean stage then says why)."""
    with pillow_limit_lifted():
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Exception:  # Pillow raises many types for a corrupt header; all mean "unknown" here
            return None


def bomb_refusal(data: bytes, max_pixels: int) -> str:
    """Why `data` is refused as a decompression bomb by its header alone, or ""."""
    size = header_size(data)
    return pixel_refusal(*size, max_pixels) if size else ""


def relative_path(sha256: str, ext: str) -> str:
    return f"{sha256[:2]}/{sha256}.{ext}"


class StoreFull(ValueError):
    """The disk holding the store is full (or over quota): the run cannot go on.

    A ValueError, so that the command line prints its message rather than a traceback."""


def _disk_of(root) -> str:
    """The mount point holding `root`, to name the disk in a message."""
    path = Path(root).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def put(root, data: bytes, ext: str) -> tuple[str, str]:
    """Store `data` under its hash; return (sha256, path relative to root).

    Written to a temporary file and renamed, so the store never holds a partial image,
    and storing the same bytes twice is a no-op. The file gets the mode the umask gives
    (0644 under umask 022). A full disk removes the temporary file and raises StoreFull.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    rel = relative_path(sha256, ext)
    target = Path(root, rel)
    if not target.exists():
        prefix = f"{_PART}{socket.gethostname()}-{os.getpid()}-"
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=prefix, delete=False) as tmp:
                tmp.write(data)
                tmp.flush()
                os.fchmod(tmp.fileno(), created_mode())
            os.replace(tmp.name, target)
        except OSError as error:
            if tmp is not None:
                Path(tmp.name).unlink(missing_ok=True)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(
                    f"no space left on the disk holding the image store {root} (mounted at {_disk_of(root)}): "
                    "free space there or point the store elsewhere, then run again (finished images are kept)",
                ) from None
            raise
    return sha256, rel


def sha256_of_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partials(root) -> list[Path]:
    """Delete temporary files left by killed writers on this host; return what was removed."""
    removed = []
    host = socket.gethostname()
    for path in Path(root).glob(f"*/{_PART}*"):
        writer_host, _, rest = path.name[len(_PART) :].rpartition("-")[0].rpartition("-")
        pid = rest if writer_host else ""
        if writer_host == host and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
