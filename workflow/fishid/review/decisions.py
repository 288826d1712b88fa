"""The user's decisions, written as the cleaning stage reads them: config/exclusions.tsv
(id, reason) and config/relabels.tsv (id, label, reason, when).

Each write is a read-modify-write under an exclusive lock on the folder, ended by an atomic
rename: two writers at once keep both decisions, and a Snakemake job reading the file sees
the old table or the new one, never half of one.
"""

import contextlib
import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from fishid.clean.stage import EXCLUSION_COLUMNS, NOT_A_FISH, RELABEL_COLUMNS
from fishid.tables import read_table, write_table


@contextlib.contextmanager
def locked(folder):
    """An exclusive lock on a folder (flock on its descriptor: no lock file left behind)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def upsert(path, columns: list[str], row: dict) -> pd.DataFrame:
    """Add `row`, replacing an earlier decision about the same id; returns the new table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):
        table = read_table(path, columns) if path.exists() else pd.DataFrame(columns=columns)
        table = pd.concat([table[table["id"] != row["id"]], pd.DataFrame([row])], ignore_index=True)
        write_table(table, path, columns)
    return table


def _one_line(text: str, what: str) -> str:
    """A TSV field: tabs and newlines would break the table (and forge rows)."""
    text = " ".join(str(text).split())
    if not text:
        raise ValueError(f"give a {what}")
    return text


def exclude(path, sha256: str, reason: str) -> pd.DataFrame:
    return upsert(path, EXCLUSION_COLUMNS, {"id": sha256, "reason": _one_line(reason, "reason")})


def relabel(path, sha256: str, label: str, reason: str, allowed, when: str | None = None) -> pd.DataFrame:
    """`label` must be a species of the configuration, or "not a fish"."""
    label = _one_line(label, "label")
    if label != NOT_A_FISH and label not in set(allowed):
        raise ValueError(f"{label!r} is not a species of the configuration (nor {NOT_A_FISH!r})")
    row = {
        "id": sha256,
        "label": label,
        "reason": _one_line(reason, "reason"),
        "when": when or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return upsert(path, RELABEL_COLUMNS, row)
