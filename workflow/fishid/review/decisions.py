"""The user's decisions, written as the cleaning stage reads them: config/exclusions.tsv
(id, reason) and config/relabels.tsv (id, label, reason, when).

Each write is a read-modify-write under an exclusive lock on the folder, ended by an atomic
rename: two writers at once keep both decisions, and a Snakemake job reading the file sees
the old table or the new one, never half of one. One photo holds one decision: a second one
that contradicts it (an exclusion and a relabelling, two relabellings to different labels) is
refused, naming the first, until it is undone.
"""

import contextlib
import csv
import fcntl
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from fishid.clean.stage import (
    EXCLUSION_COLUMNS,
    NOT_A_FISH,
    RELABEL_COLUMNS,
    exclusion_reason,
    not_a_fish_reason,
    relabel_reason,
)
from fishid.tables import read_table, write_table, write_text_atomic

KINDS = {"exclude": EXCLUSION_COLUMNS, "relabel": RELABEL_COLUMNS}


class Conflict(ValueError):
    """A decision that contradicts one already written about the photo."""


@contextlib.contextmanager
def locked(folder):
    """An exclusive lock on a folder (flock on its descriptor: no lock file left behind)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def locked_all(paths):
    """The locks of every folder holding one of `paths`, each once and in one order (two
    writers taking them in different orders would wait on each other for ever)."""
    folders = sorted({str(Path(p).parent) for p in paths})
    with contextlib.ExitStack() as stack:
        for folder in folders:
            Path(folder).mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(folder))
        yield


def _read(path, columns: list[str]) -> pd.DataFrame:
    path = Path(path)
    return read_table(path, columns) if path.exists() else pd.DataFrame(columns=columns)


def _upsert_unlocked(path, columns: list[str], row: dict) -> pd.DataFrame:
    table = _read(path, columns)
    table = pd.concat([table[table["id"] != row["id"]], pd.DataFrame([row])], ignore_index=True)
    write_table(table, path, columns)
    return table


def upsert(path, columns: list[str], row: dict) -> pd.DataFrame:
    """Add `row`, replacing an earlier decision about the same id; returns the new table."""
    with locked_all([path]):
        return _upsert_unlocked(path, columns, row)


def _one_line(text: str, what: str) -> str:
    """A TSV field: tabs and newlines would break the table (and forge rows)."""
    text = " ".join(str(text).split())
    if not text:
        raise ValueError(f"give a {what}")
    return text


def describe(kind: str, row: dict, path) -> str:
    """A decision in words, naming the file that holds it."""
    what = "exclusion" if kind == "exclude" else f"relabelling to {row['label']}"
    return f"{what} ({row['reason']}) in {path}"


def conflict(action: str, label: str, sha256: str, exclusions_path, relabels_path) -> str | None:
    """Why a new decision contradicts one already written about the photo, or None. Repeating
    a decision (to change its reason) is no conflict."""
    excluded = _read(exclusions_path, EXCLUSION_COLUMNS)
    relabelled = _read(relabels_path, RELABEL_COLUMNS)
    for kind, table, path in (("exclude", excluded, exclusions_path), ("relabel", relabelled, relabels_path)):
        for row in table[table["id"] == sha256].to_dict("records"):
            if kind != action or (kind == "relabel" and row["label"] != label):
                return (
                    f"{sha256[:12]} already has a decision: {describe(kind, row, path)}; "
                    "undo it on the Pending page first"
                )
    return None


def _row(action: str, sha256: str, reason: str, label: str = "", allowed=(), when=None) -> dict:
    """A decision's row in its table; a relabelling's `label` must be a species of the
    configuration (`allowed`), or "not a fish"."""
    reason = _one_line(reason, "reason")
    if action == "exclude":
        return {"id": sha256, "reason": reason}
    if action != "relabel":
        raise ValueError(f"action must be exclude or relabel, not {action!r}")
    label = _one_line(label, "label")
    if label != NOT_A_FISH and label not in set(allowed):
        raise ValueError(f"{label!r} is not a species of the configuration (nor {NOT_A_FISH!r})")
    when = when or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": sha256, "label": label, "reason": reason, "when": when}


def decide(
    exclusions_path, relabels_path, sha256: str, action: str, reason: str, label: str = "", allowed=(), when=None
) -> Path:
    """Write one decision (action "exclude" or "relabel"), refused with Conflict (a
    ValueError) when it contradicts one already written about the photo; returns the file written."""
    row = _row(action, sha256, reason, label, allowed, when)
    path = exclusions_path if action == "exclude" else relabels_path
    # Both folders locked: the check and the write see one state of both tables.
    with locked_all([exclusions_path, relabels_path]):
        problem = conflict(action, row.get("label", ""), sha256, exclusions_path, relabels_path)
        if problem:
            raise Conflict(problem)
        _upsert_unlocked(path, KINDS[action], row)
    return Path(path)


def exclude(path, sha256: str, reason: str) -> pd.DataFrame:
    return upsert(path, EXCLUSION_COLUMNS, _row("exclude", sha256, reason))


def relabel(path, sha256: str, label: str, reason: str, allowed, when: str | None = None) -> pd.DataFrame:
    return upsert(path, RELABEL_COLUMNS, _row("relabel", sha256, reason, label, allowed, when))


# --- what the cleaning table does not show yet, and undoing it ------------------------------


def applied(kind: str, decision: dict, image: dict) -> bool:
    """Whether the cleaning table's row of the photo already shows the decision, as
    fishid.clean.stage words it (an edited reason is a new decision, not yet applied)."""
    kept, reason = image.get("kept") == "True", image.get("reason", "")
    if kind == "exclude":
        return not kept and reason == exclusion_reason(decision["reason"])
    if decision["label"] == NOT_A_FISH:
        return not kept and reason == not_a_fish_reason(decision["reason"])
    if image.get("listed_as") != decision["label"] and image.get("taxon") != decision["label"]:
        return False
    # A relabelled photo that a later filter dropped keeps that filter's reason.
    before, after = relabel_reason("\0", decision["label"], decision["reason"]).split("\0")  # any listed taxon
    return not kept or (reason.startswith(before) and reason.endswith(after))


def pending(exclusions_path, relabels_path, clean: pd.DataFrame) -> list[dict]:
    """The decisions about photos of the cleaning table that it does not show yet: each as
    {kind, id, label, reason, when, file}, exclusions first, in file order. Rows naming a
    record (exclusions by record id) are not photos' decisions and are left out."""
    paths = {"exclude": exclusions_path, "relabel": relabels_path}
    tables = {kind: _read(path, KINDS[kind]) for kind, path in paths.items()}
    # Only the decided photos' rows: the whole table as dicts took 0.8 s a page at 20,000 photos.
    ids = set().union(*(set(t["id"]) for t in tables.values()))
    images = clean[clean["sha256"].isin(ids)].set_index("sha256").to_dict("index")
    found = []
    for kind, path in paths.items():
        for row in tables[kind].to_dict("records"):
            image = images.get(row["id"])
            if image is not None and not applied(kind, row, image):
                found.append({"kind": kind, "label": "", "when": "", **row, "file": str(path)})
    return found


def pending_of(found: list[dict], sha256: str) -> dict | None:
    return next((d for d in found if d["id"] == sha256), None)


_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def records_of(text: str) -> list[tuple[list[str], str]]:
    """A TSV's records as (fields, the exact text they were read from): a quoted field may
    span lines (fishid.tables.table_text)."""
    lines = _LINE.findall(text)
    reader = csv.reader(iter(lines), delimiter="\t")
    records, used = [], 0
    for fields in reader:
        records.append((fields, "".join(lines[used : reader.line_num])))
        used = reader.line_num
    return records


def undo(path, sha256: str) -> None:
    """Remove the decision about `sha256` from the table at `path`: that row only, every
    other byte of the file kept; ValueError when the table holds none."""
    path = Path(path)
    with locked_all([path]):
        records = records_of(path.read_bytes().decode()) if path.exists() else []
        if not records or "id" not in records[0][0]:
            raise ValueError(f"{path}: no table with an id column")
        column = records[0][0].index("id")
        kept = [text for fields, text in records[1:] if len(fields) <= column or fields[column] != sha256]
        if len(kept) == len(records) - 1:
            raise ValueError(f"{path} holds no decision about {sha256}: nothing to undo")
        write_text_atomic(path, records[0][1] + "".join(kept))
