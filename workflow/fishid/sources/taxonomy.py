"""Ranks for the records that came without them, by GBIF name matching, cached per name.

GBIF records carry GBIF's classification of their occurrence (fishid.sources.gbif.occurrence_ranks);
FishBase, FishPix, folder and synthetic-without-ranks records carry only a name. Every source's
listing (fishid.sources.base.list_source) sends each name whose records have no rank at all here,
once: it is matched against a GBIF checklist (GBIF's backbone by default, so that its ranks are
those GBIF gives its occurrences) with pygbif's species.name_backbone, through the web client's
guard and retries (fishid.sources.gbif_api.api_root, asking). GBIF's answer is kept as JSON in the
cache folder (resources/taxonomy/<checklist>/), from which later listings, and every offline one,
read it.

A match gives the records the accepted name's ranks and key; a synonym (or a misspelling GBIF
matched fuzzily) is listed under its accepted name, the name as listed staying in `source_taxon`,
so that two sources filing one photo under two names of one species do not make a label conflict.
A name that does not match (matchType NONE or HIGHERRANK, or a confidence below `min_confidence`),
or that cannot be checked (offline and not in the cache, or GBIF unreachable), keeps empty ranks
and gets a note saying why in the listing's summary: it never stops the listing. A rank GBIF's
answer lacks stays empty (its backbone has had no class for some ray-finned fishes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path

import pandas as pd

from fishid import web
from fishid.config import default
from fishid.sources.gbif_api import api_root, asking, canonical
from fishid.tables import RANKS, write_text_atomic

log = logging.getLogger(__name__)

# What GBIF's answers may put in a record: a uninomial for a rank above the species, a binomial
# for a species, a short key. Anything else (markup, control characters, paths) is left out.
_UNINOMIAL = re.compile(r"[A-Z][a-z]+(?:-[a-z]+)?")
_BINOMIAL = re.compile(r"[A-Z][a-z]+(?:-[a-z]+)? [a-z]+(?:-[a-z]+)?")
_KEY = re.compile(r"[A-Za-z0-9]{1,40}")
_CHECKLIST = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The `taxonomy:` section of the configuration, its defaults config/schema.yaml's."""

    cache: Path = Path(default("taxonomy", "cache"))
    api: str = default("taxonomy", "api")
    checklist_key: str = default("taxonomy", "checklist_key")
    min_confidence: int = default("taxonomy", "min_confidence")

    @classmethod
    def from_spec(cls, spec: dict | None) -> Settings:
        spec = dict(spec or {})
        unknown = sorted(set(spec) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"taxonomy: unknown key(s) {', '.join(unknown)} (known: cache, api, checklist_key, min_confidence)"
            )
        if not _CHECKLIST.fullmatch(str(spec.get("checklist_key", cls.checklist_key))):
            raise ValueError(f"taxonomy.checklist_key: {spec['checklist_key']!r} is not a GBIF checklist key (a UUID)")
        if "cache" in spec:
            spec["cache"] = Path(spec["cache"])
        return cls(**spec)


def cache_file(settings: Settings, name: str) -> Path:
    """Where GBIF's answer for `name` is kept: a file name made of the name's letters and its
    hash, so that no name (a source's text) can lead outside the folder or meet another's file."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:80] or "name"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return settings.cache / settings.checklist_key / f"{slug}.{digest}.json"


def cached_answer(path: Path, name: str):
    """GBIF's answer for `name` kept at `path`, or None when there is none (or not for this name)."""
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("taxonomy: %s is unreadable (%s); asking again", path, error)
        return None
    if not isinstance(kept, dict) or kept.get("name") != name or "answer" not in kept:
        log.warning("taxonomy: %s does not hold the answer for %r; asking again", path, name)
        return None
    return kept["answer"]


def ask(name: str, settings: Settings, client: web.Client):
    """GBIF's name-match answer for `name` (pygbif's species.name_backbone: GET {api}/v2/species/match)."""
    from pygbif import species
    from pygbif.gbifutils import NoResultException

    timeout = (client.settings.connect_timeout, client.settings.read_timeout)

    def match():
        return species.name_backbone(
            scientificName=name, strict=True, checklistKey=settings.checklist_key, timeout=timeout
        )

    with api_root(settings.api, client):
        try:
            return asking(client, match, f"gbif: matching {name!r}")
        except NoResultException as error:  # an answer that is not JSON
            raise ValueError(f"gbif: matching {name!r}: {error}") from None


def _name(value, pattern: re.Pattern, authorship: bool = False) -> str:
    """`value` if it is a name of that shape, else "". A usage's name carries its authorship
    (`authorship`: read without it); a classification's steps are the bare names."""
    text = (canonical(value) if authorship else value) if isinstance(value, str) else ""
    return text if pattern.fullmatch(text) else ""


def read_match(name: str, answer, min_confidence: int) -> tuple[dict | None, str]:
    """(fields for the records, note) from a v2 name-match answer: fields are the ranks, the
    accepted name's key and `accepted` (its name when a species, else ""); None when the
    answer gives no usable match, the note then says why. A synonym or a fuzzy match is noted."""
    if not isinstance(answer, dict):
        return None, f"GBIF's name match answered a {type(answer).__name__}, not a match; ranks left empty"
    diagnostics = answer.get("diagnostics") if isinstance(answer.get("diagnostics"), dict) else {}
    match_type = str(diagnostics.get("matchType") or "NONE").upper()
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    accepted = answer.get("acceptedUsage") if isinstance(answer.get("acceptedUsage"), dict) else usage
    if match_type == "NONE" or not usage:
        why = f" ({diagnostics['note'][:200]})" if isinstance(diagnostics.get("note"), str) else ""
        return None, f"no match in GBIF's checklist{why}; ranks left empty (check the spelling)"
    if match_type == "HIGHERRANK":
        found = f"{str(usage.get('rank', '')).lower()} {_name(usage.get('name'), _UNINOMIAL, True) or '?'}"
        return None, f"GBIF matched only the {found}, not the name itself; ranks left empty"
    confidence = diagnostics.get("confidence")
    if isinstance(confidence, int | float) and confidence < min_confidence:
        return (
            None,
            f"GBIF's match has confidence {confidence}, below min_confidence {min_confidence}; ranks left empty",
        )
    ranks = dict.fromkeys(RANKS, "")
    classification = answer.get("classification")
    for entry in classification if isinstance(classification, list) else []:
        rank = str(entry.get("rank", "")).lower() if isinstance(entry, dict) else ""
        if rank in ranks:
            ranks[rank] = _name(entry.get("name"), _BINOMIAL if rank == "species" else _UNINOMIAL)
    # The accepted usage is the name the records are listed under, when it is a species.
    species = _name(accepted.get("canonicalName") or accepted.get("name"), _BINOMIAL, True)
    if str(accepted.get("rank", "")).upper() != "SPECIES":
        species = ""
    ranks["species"] = species or ranks["species"]
    key = str(accepted.get("key", ""))
    found = ranks | {"taxon_key": key if _KEY.fullmatch(key) else "", "accepted": species}
    if not species or species == canonical(name):
        return found, ""
    if answer.get("synonym") is True:
        return found, f"a synonym of {species} in GBIF's checklist: listed as {species}"
    if match_type == "FUZZY":
        return found, f"GBIF matched it fuzzily to {species}: listed as {species} (check the spelling)"
    return found, f"GBIF matched it to {species}: listed as {species}"


def lookup(name: str, settings: Settings, client: web.Client, offline: bool) -> tuple[dict | None, str]:
    """read_match of GBIF's answer for `name`, from the cache, else (online) asked and cached."""
    path = cache_file(settings, name)
    answer = cached_answer(path, name)
    if answer is None:
        if offline:
            return None, f"not checked: offline, and {path} is not there (list once online to fill the cache)"
        try:
            answer = ask(name, settings, client)
        except ValueError as error:
            return None, f"not checked: {error}; ranks left empty, nothing cached"
        write_text_atomic(path, json.dumps({"name": name, "answer": answer}, sort_keys=True, indent=1) + "\n")
    return read_match(name, answer, settings.min_confidence)


def unranked(records: pd.DataFrame) -> pd.Series:
    """The records with a name but no rank at all: those a listing matches by name."""
    return (records["taxon"] != "") & (records[RANKS] == "").all(axis=1)


def fill_ranks(
    records: pd.DataFrame, settings: Settings, client: web.Client, offline: bool
) -> tuple[pd.DataFrame, dict[str, str]]:
    """(records with ranks, notes by name): each name of the unranked records looked up once."""
    records = records.copy()
    wanted = unranked(records)
    notes = {}
    for name in sorted(set(records.loc[wanted, "taxon"])):
        found, note = lookup(name, settings, client, offline)
        if note:
            notes[name] = note
        if found is None:
            continue
        rows = wanted & (records["taxon"] == name)
        records.loc[rows, [*RANKS, "taxon_key"]] = [found[column] for column in [*RANKS, "taxon_key"]]
        if found["accepted"]:
            records.loc[rows, "taxon"] = found["accepted"]
    return records, notes
