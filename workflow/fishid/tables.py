"""The stage tables of the data model (DESIGN.md): their columns, and reading and writing them.

Tables are tab-separated text with a header row, so that users can open them in a
spreadsheet and diff them in git.
"""

import os
import tempfile
import threading
from pathlib import Path

import pandas as pd

RECORD_COLUMNS = [
    "record_id",
    "source",
    "taxon",
    "source_taxon",
    "media_url",
    "page_url",
    "license",
    "rights_holder",
    "creator",
    "occurrence_id",
    "basis_of_record",
    # Darwin Core preparations (GBIF): "EtOH", "skeleton" ...; cleaning can drop by it.
    "preparations",
    "dataset_key",
    "listed_at",
    # A split the source already made (a folder source's train/ and val/); empty for most sources.
    "source_split",
]
DOWNLOAD_COLUMNS = [
    "record_id",
    "sha256",
    "path",
    "bytes",
    "content_type",
    "http_status",
    "retrieved_at",
    "error",
]
CLEAN_COLUMNS = [
    "sha256",
    "width",
    "height",
    "format",
    "mode",
    "frames",
    "phash",
    "kept",
    "reason",
    "duplicate_of",
    "taxon",
    "listed_as",
    "record_ids",
    "derived_path",
    "group",
    "near_duplicate_cluster",
    # Split roles the image's records came with ("|"-joined; "train|val": one photo filed in both).
    "source_split",
    "chroma",
    "midtone_chroma",
    "colours",
    "flat_fraction",
]
SPLIT_COLUMNS = ["dataset", "sha256", "label", "split", "group", "taxon", "derived_path"]
DECISION_COLUMNS = ["dataset", "sha256", "taxon", "label", "group", "decision", "reason"]
# The one decision of that table about an image that is in the split: its group straddles a
# split the source gave (datasets with use_source_split).
LEAK = "leak across the given split"
_UMASK_LOCK = threading.Lock()


def readable(name: str) -> str:
    """A file name as text a table can hold: bytes that are not UTF-8 written as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def read_table(path, columns=None) -> pd.DataFrame:
    """Read a stage table as strings; with `columns`, fail naming the file if any is missing."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if columns is not None:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def write_table(table: pd.DataFrame, path, columns=None) -> None:
    """Write atomically: a killed job never leaves a half-written table behind."""
    if columns is not None:
        table = table.reindex(columns=columns)
    write_text_atomic(path, table.to_csv(sep="\t", index=False))


def created_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the umask (0644 under umask 022).

    Temporary files are created 0600; files renamed into place get this mode, so that a
    lab's shared file system lets colleagues read them as the umask intends.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # no /proc: read the umask by setting it (briefly process-wide)
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename; on failure none is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            tmp.write(text)
            tmp.flush()
            os.fchmod(tmp.fileno(), created_mode())
        except BaseException:
            tmp.close()
            Path(tmp.name).unlink(missing_ok=True)
            raise
    os.replace(tmp.name, path)
