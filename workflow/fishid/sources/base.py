"""List one configured source: the `kind` of its config entry picks the adapter.

Every adapter returns record dicts with the columns of `tables.RECORD_COLUMNS` (the
`source` column is filled here with the source's name in the config) and notes by
taxon: what was expected but not found, so that an empty species is reported, never
silent. A record the adapter could not take (no id, media of the wrong shape, a row
without its occurrence) is a problem, named with its reason in its taxon's note (taxon
"" when it has none): one bad record never stops the listing. A source that lists
nothing at all is an error. Records that come without ranks get them here, whatever
their kind, by GBIF name matching (fishid.sources.taxonomy); a name left without is a note.

What a kind is (how it lists, whether it needs the web, its local inputs, how it is cited, the
bytes of its own URL scheme) is declared once, as the `KIND` (a SourceKind) of its own module;
fishid.sources.kinds is the registry of those declarations, which this module, the download
stage and the citation ask.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from fishid import web
from fishid.config import kind_of
from fishid.tables import RECORD_COLUMNS

if TYPE_CHECKING:  # imported where used: it imports the GBIF adapter, which imports this module
    from fishid.sources import taxonomy

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = ["taxon", "records", "note"]
FOLDER_KEY = "folder:"  # the dataset key of a folder source's records (fishid.download.fetch.folder_root)


@dataclass
class Listing:
    records: list[dict]
    notes: dict[str, str] = field(default_factory=dict)  # taxon -> why it has no (or few) records
    # (taxon, what was left out and why, naming the record, or the file and line): in the notes.
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Context:
    """What every adapter may need besides its own config entry."""

    name: str
    seed: int = 0
    offline: bool = False
    client: web.Client = field(default_factory=web.Client)
    # Name matching for records without ranks (fishid.sources.taxonomy.Settings): the `fishid list`
    # step always gives it; a caller without it (a library call, a test) lists without matching.
    taxonomy: taxonomy.Settings | None = None


def no_local_inputs(spec: dict) -> list[str]:
    return []


@dataclass(frozen=True)
class SourceKind:
    """What one kind of source is: declared once, as `KIND` in the kind's own module, and
    registered in fishid.sources.kinds. The module of `list_records` is the kind's module."""

    name: str  # the `kind` of a source's configuration entry (the schema's enum)
    list_records: Callable[[dict, Context], Listing]  # (source spec, context) -> its listing
    # (source spec, facts of its download, the day it was listed) -> (citation, note), as its terms ask
    cite: Callable[[dict, dict, date], tuple[str, str]]
    title: str  # how a report title names where the photos come from
    network: bool = False  # lists from the web: refused where the configuration says offline
    local_inputs: Callable[[dict], list[str]] = no_local_inputs  # files it lists from (an edit lists again)
    gbif_datasets: bool = False  # its records' dataset keys are GBIF datasetKeys (derived_dataset.tsv)
    download_facts: Callable[[str, dict], dict] | None = None  # (name, spec) -> what its citation's facts are
    scheme: str = ""  # the media URL scheme whose bytes it makes itself (served_bytes), if any
    served_bytes: Callable[[str], bytes] | None = None
    local_files: bool = False  # its records read local files, under the `folder:` dataset key (FOLDER_KEY)

    @property
    def module(self) -> str:
        """The kind's module: the listing rule's code inputs are its imports (Snakefile's source_code)."""
        return self.list_records.__module__


def source_kind(name: str, spec: dict) -> SourceKind:
    """The kind of source `name`, from the registry; ValueError naming the known kinds where unknown.

    The registry is imported by name, on demand: the listing step's code inputs are this module's
    imports and its own kind's module's (fishid.codedeps, Snakefile's source_code), not every kind's.
    """
    return importlib.import_module("fishid.sources.kinds").kind(kind_of(name, spec))


def local_inputs(name: str, spec: dict) -> list[str]:
    """The local files a source lists from (editing them lists it again)."""
    return source_kind(name, spec).local_inputs(spec)


def day_of(text) -> date | None:
    """The day an ISO date or timestamp names, or None."""
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def config_says(spec: dict) -> str:
    """What a source's configuration says of the photos' rights ("" for nothing), for its citation."""
    parts = [f"{label} {spec[key]}" for key, label in (("rights_holder", "©"), ("creator", "by")) if spec.get(key)]
    if spec.get("licence"):
        parts.append(f"licence {spec['licence']}")
    return ", ".join(parts)


def config_note(spec: dict) -> str:
    return f"the configuration says: {config_says(spec)}" if config_says(spec) else ""


def list_source(name: str, spec: dict, context: Context | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records table, per-taxon summary) of source `name`; raises ValueError naming what to fix."""
    context = context or Context(name)
    source = source_kind(name, spec)
    kind = source.name
    if context.offline and source.network:
        raise ValueError(
            f"sources.{name}: kind {kind} lists from the web, but the configuration says offline: true; "
            "set offline: false (or use a gbif_download or folder source)"
        )
    listing = source.list_records(spec, context)
    notes = noted(listing.notes, listing.problems)
    if not listing.records:
        raise ValueError(
            f"sources.{name}: the {kind} source listed no images"
            + (
                "".join(f"\n  {taxon or '(no taxon)'}: {note}" for taxon, note in notes.items())
                or "; check its settings"
            )
        )
    # Every field as text: a source's JSON may hold a number where a name belongs.
    records = pd.DataFrame(listing.records).reindex(columns=RECORD_COLUMNS, fill_value="").fillna("").astype(str)
    records["source"] = name
    records["listed_at"] = web.utc_now()
    if not source.local_files:
        # Only a folder source's records may read local files, and the fetch stage tells
        # them by their `folder:` dataset key: no other source may claim one.
        claimed = records["dataset_key"].astype(str).str.startswith(FOLDER_KEY)
        if claimed.any():
            log.warning("sources.%s: %d record(s) claim a folder: dataset key; prefixed", name, claimed.sum())
            records.loc[claimed, "dataset_key"] = f"{kind}:" + records.loc[claimed, "dataset_key"]
    duplicated = records["record_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"sources.{name}: duplicate record id(s) {list(records['record_id'][duplicated][:5])}")
    records, rank_notes = _with_ranks(records, context)
    notes = noted(notes, list(rank_notes.items()))
    for taxon, note in notes.items():
        log.warning("sources.%s: %s: %s", name, taxon or "(no taxon)", note)
    return records, summarise(records, notes)


def _with_ranks(records: pd.DataFrame, context: Context) -> tuple[pd.DataFrame, dict[str, str]]:
    """The records with ranks for those that came without, and a note for each name left without."""
    from fishid.sources import taxonomy

    if context.taxonomy is None:
        if taxonomy.unranked(records).any():
            log.info("sources.%s: no taxonomy settings given: records without ranks keep none", context.name)
        return records, {}
    return taxonomy.fill_ranks(records, context.taxonomy, context.client, context.offline)


def noted(notes: dict[str, str], problems: list[tuple[str, str]]) -> dict[str, str]:
    """`notes` with each taxon's problems added, in the order they were met."""
    merged = {taxon: [note] for taxon, note in notes.items()}
    for taxon, problem in problems:
        merged.setdefault(taxon, []).append(problem)
    return {taxon: "; ".join(parts) for taxon, parts in merged.items()}


def summarise(records: pd.DataFrame, notes: dict[str, str]) -> pd.DataFrame:
    counts = records["taxon"].value_counts()
    taxa = sorted(set(counts.index) | set(notes))
    return pd.DataFrame(
        {"taxon": taxa, "records": [int(counts.get(t, 0)) for t in taxa], "note": [notes.get(t, "") for t in taxa]},
        columns=SUMMARY_COLUMNS,
    )
