"""The stage tables of the data model (DESIGN.md): their columns, and reading and writing them.

Tables are tab-separated text with a header row, so that users can open them in a
spreadsheet and diff them in git. A field holding a tab, a newline or any other control
character is quoted (table_text), so any string a source sends reads back as itself.
"""

import os
import re
import tempfile
import threading
import uuid
from pathlib import Path

import pandas as pd

# The ranks of a record's classification, GBIF's names for them. A rank a source does not know
# stays an empty string (GBIF's backbone has had no class for some ray-finned fishes): never
# shifted up. The clean and split tables carry all but the species, which their `taxon` holds.
RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
HIGHER_RANKS = RANKS[:-1]
RECORD_COLUMNS = [
    "record_id",
    "source",
    "taxon",
    "source_taxon",
    *RANKS,
    # GBIF's key of the accepted name (its backbone's usage key), where known.
    "taxon_key",
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
_CLEAN_BEFORE_MEASURES = [
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
    # The sources that listed the image ("|"-joined, sorted): per-source results and splits.
    "sources",
    "derived_path",
    "group",
    "near_duplicate_cluster",
    # Split roles the image's records came with ("|"-joined; "train|val": one photo filed in both).
    "source_split",
]


def clean_columns(measures: list[str]) -> list[str]:
    """The clean table's columns with cleaning's measures in their place. The checks declare
    their measures (fishid.clean.photo_filters, a layer above this module), so the table is
    written with fishid.clean.stage.CLEAN_COLUMNS."""
    return [*_CLEAN_BEFORE_MEASURES, *measures, *HIGHER_RANKS]


# What a later stage can count on in a clean table, whichever checks measured it.
CLEAN_COLUMNS_WITHOUT_MEASURES = clean_columns([])
SPLIT_COLUMNS = ["dataset", "sha256", "label", "split", "group", "taxon", "derived_path", "sources", *HIGHER_RANKS]
DECISION_COLUMNS = ["dataset", "sha256", "taxon", "label", "group", "decision", "reason"]
# The one decision of that table about an image that is in the split: its group straddles a
# split the source gave (datasets with use_source_split).
LEAK = "leak across the given split"
_UMASK_LOCK = threading.Lock()
# What a reader may take for the end of a row (\r, \x85, \u2028), or a terminal obeys (\x1b):
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_IN_A_LINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # all but \t and \n
_ESCAPE_LOOKALIKE = re.compile(rb"\\(?=x[0-9a-fA-F]{2})")


def readable(name: str) -> str:
    """A file name as text a table can hold: bytes that are not UTF-8 written as \\xNN, and a
    backslash that would read as such an escape (`\\x` and two hex digits) as \\x5c, so that two
    names never read alike (the text `caf\\xe9.jpg` and the bytes `caf<0xE9>.jpg`). Names
    without that pair of characters read as before."""
    return _ESCAPE_LOOKALIKE.sub(rb"\\x5c", os.fsencode(name)).decode("utf-8", "backslashreplace")


def read_table(path, columns=None) -> pd.DataFrame:
    """Read a stage table as strings; with `columns`, fail naming the file if any is missing.

    Quoted fields (table_text) come back as they were written, control characters included."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if columns is not None:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def read_if_there(read, path, default=None):
    """`read(path)`, or `default` where the file is not there. Not a check, then a read: a
    running Snakemake removes a job's old outputs before the job writes them again, so a file
    seen a moment ago can be gone when opened (`fishid review` beside a run answered 500)."""
    try:
        return read(path)
    except FileNotFoundError:
        return default


def write_table(table: pd.DataFrame, path, columns=None) -> None:
    """Write atomically: a killed job never leaves a half-written table behind."""
    if columns is not None:
        table = table.reindex(columns=columns)
    write_text_atomic(path, table_text(table))


def table_text(table: pd.DataFrame, sep: str = "\t", **options) -> str:
    """`table` as delimited text with a header, as `to_csv(sep=sep, index=False, **options)`
    writes it, except that a field or column name holding a control character is quoted.

    pandas' csv writer quotes only fields holding the separator, a quote or a newline: a bare
    carriage return from a source (a GBIF creator `Ann\\rgbif:forged`) went out unquoted and
    split the row in two when read back, the second row taking its columns from the first's
    later fields. Tables without control characters come out byte for byte as before.
    """
    text = table.to_csv(sep=sep, index=False, **options)
    if not _CONTROL_IN_A_LINE.search(text) and (sep == "\t" or "\t" not in text):
        return text
    # pandas keeps formatting the numbers: each such field goes through it as a placeholder
    # (a random token, which no source can have guessed) that the quoted field then replaces.
    token = f"fishid{uuid.uuid4().hex}n"
    quoted = []

    def placeholder(value):
        if not (isinstance(value, str) and _CONTROL.search(value)):
            return value
        quoted.append('"' + value.replace('"', '""') + '"')
        return f"{token}{len(quoted) - 1}n"

    marked = table.set_axis([placeholder(name) for name in table.columns], axis=1)
    for position in range(marked.shape[1]):
        column = marked.iloc[:, position]
        if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            # As objects, so that the column's other values are formatted as before.
            marked.isetitem(position, pd.Series([placeholder(v) for v in column], index=column.index, dtype=object))
    text = marked.to_csv(sep=sep, index=False, **options)
    return re.sub(f"{token}(\\d+)n", lambda match: quoted[int(match[1])], text)


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
