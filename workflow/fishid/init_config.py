"""`fishid init TAXON`: a ready configuration for a taxon, from GBIF's name backbone.

Online, the name is matched as the GBIF source matches it (pygbif's v2 species/match, through
sources.gbif's api_root and the web client's guard and retries), and one occurrence search
(still images, limit 0, faceted by species and genus) counts the occurrences with photos and
the species and genera that have them; the most photographed are named by key. The
configuration takes the GBIF source of the taxon (a requested download where the search could
not page through it all), FishBase and FishPix where the backbone puts the taxon among the
fishes, datasets chosen by rule on the cleaned photos (explicit lists from the counts where this
checkout's schema has no rules yet), and the study's RI and TL models. Every block it does not
decide is copied from config/amphiprion.yaml, the study, so the two never drift apart.

Offline, or where GBIF cannot be reached, the same configuration comes out with comments that
say what could not be checked. Either way it is validated before a line is written.
"""

from __future__ import annotations

import logging
import re
import textwrap
from dataclasses import dataclass, field

import jsonschema
import yaml

from fishid import config, web
from fishid.sources import gbif
from fishid.sources.kinds import kind
from fishid.tables import HIGHER_RANKS
from fishid.text import escape_text

log = logging.getLogger(__name__)
# A gbif source's API root where its entry names none (a mirror is written into the config).
GBIF_API = config.default("api", definition="source_gbif")

TEMPLATE = config.SCHEMA_PATH.parent / "amphiprion.yaml"
# The classification's ranks above the species (what the datasets choose), in GBIF's capitals.
LINEAGE = tuple(rank.upper() for rank in HIGHER_RANKS)
# The fish classes (and the names some checklists rank in Actinopterygii's place): FishBase and
# FishPix cover them. Sarcopterygii is left out: it holds the tetrapods too.
FISH_GROUPS = frozenset(
    {"Actinopterygii", "Actinopteri", "Teleostei", "Chondrichthyes", "Elasmobranchii", "Holocephali", "Myxini"}
    | {"Petromyzonti", "Petromyzontida", "Cephalaspidomorphi"}
)
STUDY_ARCHS = ("ri", "tl")
FACET_LIMIT = 1000  # species and genera counted in the one search
MAX_NAMED = 40  # of those, the most photographed are named (one backbone request each)


@dataclass
class Survey:
    """What GBIF says of a taxon; what could not be checked is said in `unchecked`."""

    taxon: str  # as asked
    name: str  # the accepted name (the one asked, where not checked)
    rank: str = ""  # GBIF's rank (GENUS, FAMILY, ...); "" where not checked
    key: str = ""
    label: str = ""  # the accepted name with its authorship
    lineage: dict = field(default_factory=dict)  # rank -> name, kingdom down
    groups: frozenset = frozenset()  # every name of its classification, whatever the rank
    synonym: bool = False
    photos: int | None = None  # occurrences with a still image
    species: list = field(default_factory=list)  # (name, occurrences with photos), most first
    species_total: int | None = None
    genera: list = field(default_factory=list)
    unchecked: list = field(default_factory=list)


# --------------------------------------------------------------------------- what GBIF says


def name_pattern() -> str:
    """What a GBIF source's names must look like: the schema's pattern, checked before asking GBIF."""
    return config.load_schema()["$defs"]["source_gbif"]["properties"]["names"]["items"]["pattern"]


def checked_taxon(taxon: str) -> str:
    taxon = " ".join(taxon.split())
    if not re.fullmatch(name_pattern(), taxon):
        raise ValueError(
            f"fishid init: {taxon!r} is not a scientific name as GBIF writes it; give a genus, family or other "
            "taxon above species, capitalised (Amphiprion, Pomacentridae)"
        )
    if len(taxon.split()) > 1:
        raise ValueError(
            f"fishid init: {taxon!r} is a species; datasets choose species within a taxon above it: give its genus "
            f"({taxon.split()[0]}) or family"
        )
    return taxon


def backbone_entry(taxon: str, answer: dict) -> dict:
    """The accepted usage a backbone match answer (v2 species/match) gives for `taxon`, with its
    classification; a name the backbone does not know (or knows only above it) is refused."""
    usage = answer.get("usage") or {}
    match_type = (answer.get("diagnostics") or {}).get("matchType", "")
    if not usage or match_type in ("", "NONE"):
        raise ValueError(f"fishid init: {taxon!r} has no match in the GBIF name backbone; check its spelling")
    accepted = answer.get("acceptedUsage") or usage
    if match_type == "HIGHERRANK":
        raise ValueError(
            f"fishid init: {taxon!r} matched only {accepted.get('name')!r} ({accepted.get('rank')}) in the GBIF "
            "backbone; check its spelling"
        )
    if match_type == "FUZZY":
        log.warning("gbif: %r matched fuzzily to %r", taxon, usage.get("name"))
    name = accepted.get("canonicalName") or gbif.canonical(accepted.get("name", ""))
    rank = str(accepted.get("rank") or "").upper()
    classification = [c for c in answer.get("classification") or [] if isinstance(c, dict)]
    names = [
        (str(c.get("rank", "")).upper(), c.get("canonicalName") or gbif.canonical(str(c.get("name"))))
        for c in classification
    ]
    lineage = dict(names) | {rank: name}
    return {
        "name": name,
        "rank": rank,
        "key": str(accepted.get("key", "")),
        "label": str(accepted.get("name") or name),
        "lineage": {r: lineage[r] for r in LINEAGE if lineage.get(r)},
        "groups": frozenset(n for _, n in names) | {name},
        "synonym": bool(answer.get("synonym")),
    }


def facet_counts(answer: dict, facet: str) -> list[tuple[str, int]]:
    """(key, occurrences) of one facet of an occurrence search answer, most first, ties by key."""
    wanted = facet.replace("_", "").lower()
    for found in answer.get("facets") or []:
        if isinstance(found, dict) and str(found.get("field", "")).replace("_", "").lower() == wanted:
            counts = [(str(c.get("name")), int(c.get("count") or 0)) for c in found.get("counts") or []]
            return sorted(counts, key=lambda pair: (-pair[1], pair[0]))
    return []


def survey(taxon: str, client: web.Client, api: str = GBIF_API) -> Survey:
    """What GBIF's backbone and occurrence search say of `taxon`; where GBIF cannot be reached,
    the unchecked survey, saying why."""
    with gbif.api_root(api, client):
        try:
            answer = client.retry(
                lambda: _backbone(client, scientificName=taxon, strict=True), f"gbif: matching {taxon!r}"
            )
        except web.FetchFailure as failure:
            # Unreachable (no network, GBIF down) is offline; a refusal (an address the guard
            # refuses, a 404 from a wrong mirror) is a setting to fix.
            if not failure.transient:
                raise ValueError(
                    f"fishid init: asking {api} to match {taxon!r} failed: {failure}; check --api and --download"
                    " (HTTP client settings as JSON), or give --offline"
                ) from None
            log.warning("fishid init: GBIF could not be reached (%s); writing what needs no check", failure)
            return unchecked(taxon, f"GBIF could not be reached: {failure}")
        found = Survey(taxon, **backbone_entry(taxon, answer))
        try:
            return counted(found, client)
        except (ValueError, KeyError, TypeError, AttributeError) as failure:
            found.unchecked.append(f"the counts: GBIF's occurrence search failed ({failure})")
            return found


def _timeout(client: web.Client) -> tuple[float, float]:
    return (client.settings.connect_timeout, client.settings.read_timeout)


def _backbone(client: web.Client, **query) -> dict:
    from pygbif import species

    return species.name_backbone(**query, timeout=_timeout(client))


def counted(found: Survey, client: web.Client) -> Survey:
    """`found` with its photos counted: one search, faceted by species and genus (the genera named
    for a taxon above the genus), the most photographed named by key."""
    from pygbif import occurrences

    search = gbif.asking(
        client,
        lambda: occurrences.search(
            taxonKey=found.key,
            mediatype="StillImage",
            limit=0,
            facet=["speciesKey", "genusKey"],
            facetMincount=1,
            speciesKey_facetLimit=FACET_LIMIT,
            genusKey_facetLimit=FACET_LIMIT,
            timeout=_timeout(client),
        ),
        f"gbif: counting the photos of {found.name!r}",
    )
    by_species, by_genus = facet_counts(search, "speciesKey"), facet_counts(search, "genusKey")
    log.info("gbif: %s: %s occurrences with photos; naming the most photographed", found.name, search.get("count"))

    def name_of(key):
        answer = gbif.asking(client, lambda: _backbone(client, usageKey=key), f"gbif: naming key {key}")
        return answer["usage"].get("canonicalName") or gbif.canonical(answer["usage"].get("name", ""))

    photos = int(search.get("count") or 0)
    species = [(name_of(key), count) for key, count in by_species[:MAX_NAMED]]
    genera = [(name_of(key), count) for key, count in by_genus[:MAX_NAMED]] if found.rank != "GENUS" else []
    # Set together: a failure above leaves the survey without counts, never with half of them.
    found.photos, found.species_total, found.species, found.genera = photos, len(by_species), species, genera
    return found


def unchecked(taxon: str, why: str) -> Survey:
    return Survey(
        taxon,
        taxon,
        unchecked=[
            f"the name: not matched in the GBIF backbone ({why}); the listing matches it and says if it is misspelt",
            "the counts: how many photos GBIF has, of which species",
            "FishBase and FishPix: whether the taxon is a fish genus or family (they list fish by genus)",
        ],
    )


def is_fish(found: Survey) -> bool | None:
    """Whether the backbone puts the taxon among the fishes; None where it cannot tell: not
    checked, or a chordate without a class (GBIF's backbone has lost the class of some ray-finned
    fishes)."""
    if not found.rank:
        return None
    if found.groups & FISH_GROUPS:
        return True
    if "CLASS" not in found.lineage and found.lineage.get("PHYLUM") == "Chordata":
        return None
    return False


# --------------------------------------------------------------------------- what is written


def gbif_source(found: Survey, template: dict, api: str) -> tuple[list[str], dict]:
    mirror = {"api": api} if api.rstrip("/") + "/" != GBIF_API else {}
    if found.photos is not None and found.photos > gbif.SEARCH_WINDOW:
        return [
            f"{found.photos} occurrences with photos: more than the search API pages through, so a GBIF download",
            "is requested (set GBIF_USER, GBIF_PWD and GBIF_EMAIL in the environment; README, Sources).",
        ], {"kind": "gbif_download", "request": {"taxa": [found.name]}, **mirror}
    comment = "Matched against the GBIF backbone; every species under it comes, synonyms included."
    return [comment], template["sources"]["gbif"] | {"names": [found.name]} | mirror


def fish_sources(found: Survey, template: dict) -> list[tuple[list[str], str, dict, bool]]:
    """(comments, name, spec, written or commented out) of the FishBase and FishPix sources."""
    fishbase, fishpix = template["sources"]["fishbase"], template["sources"]["fishpix"]
    licence = f"FishBase's licence is assumed ({fishbase['licence']}): check the site's terms before publishing."
    fish = is_fish(found)
    if fish is None:
        note = f"{fish_unknown(found)}: if it is a fish genus, uncomment FishBase and FishPix."
        return [
            ([note, licence], "fishbase", fishbase | {"genera": [found.name]}, False),
            ([], "fishpix", fishpix | {"genus": found.name}, False),
        ]
    if not fish:
        return []
    if found.rank == "GENUS":
        japan = "FishPix holds mostly fishes of Japan: a genus it lacks stops its listing; remove it then."
        return [
            ([licence], "fishbase", fishbase | {"genera": [found.name]}, True),
            ([japan], "fishpix", fishpix | {"genus": found.name}, True),
        ]
    genera = [name for name, _ in found.genera]
    if found.rank != "FAMILY" or not genera:
        note = f"FishBase and FishPix list fish by genus: add them for the genera of {found.name} you want."
        return [([note, licence], "fishbase", fishbase | {"genera": genera or [found.name]}, False)]
    shown = ", ".join(f"{name} ({count})" for name, count in found.genera[:8])
    genera_note = f"The genera of {found.name} with photos in GBIF (occurrences): {shown}."
    one_genus = "FishPix lists one genus per source: copy this entry (renamed) for each genus you want."
    return [
        ([genera_note, licence], "fishbase", fishbase | {"genera": genera}, True),
        ([one_genus], "fishpix", fishpix | {"genus": genera[0]}, False),
    ]


def fish_unknown(found: Survey) -> str:
    if not found.rank:
        return f"offline, whether {found.name} is a fish was not checked"
    return f"GBIF's backbone gives {found.name} no class, so whether it is a fish is not known"


def classes_needed(spec: dict) -> int:
    return len(spec["species"]) + (1 if spec.get("other") else 0)


def datasets_by_rule(found: Survey, template: dict) -> dict:
    datasets = {}
    for name, spec in usable(found, template["datasets"]).items():
        chosen = {**spec, "species": Flow(within=found.name, top=len(spec["species"]))}
        if spec.get("other"):
            chosen["other"] = Flow(within=found.name, **other_pool(found, spec))
        datasets[name] = chosen
    return datasets


def datasets_by_list(found: Survey, template: dict) -> dict:
    """Explicit species lists: the most photographed in GBIF, or placeholders to replace where
    nothing could be counted."""
    named = [name for name, _ in found.species] or [f"{found.name} replace-{letter}" for letter in "abcde"]
    datasets = {}
    for name, spec in usable(found, template["datasets"]).items():
        top = len(spec["species"])
        chosen = {**spec, "species": named[:top]}
        if spec.get("other"):
            chosen["other"] = {**other_pool(found, spec), "species": named[top:]}
        datasets[name] = chosen
    return datasets


def usable(found: Survey, datasets: dict) -> dict:
    """The datasets there are species enough for, where the counts are known."""
    if found.species_total is None:
        return datasets
    kept = {name: spec for name, spec in datasets.items() if classes_needed(spec) <= found.species_total}
    if not kept:
        raise ValueError(
            f"fishid init: GBIF has photos of {found.species_total} species of {found.name}; a classifier needs two: "
            "start from a taxon above it"
        )
    return kept


def other_pool(found: Survey, spec: dict) -> dict:
    """The study's pool, drawing fewer photos where GBIF has few of the species left for it
    (cleaning keeps fewer than GBIF lists: half of them, at most)."""
    other = {key: value for key, value in spec["other"].items() if key != "species"}
    if found.species:
        left = sum(count for _, count in found.species[len(spec["species"]) :])
        other["size"] = max(1, min(other["size"], left // 2))
    return other


def schema_takes(datasets: dict) -> bool:
    """Whether this checkout's schema accepts `datasets` (the rule forms came after lists): tried, not assumed."""
    validator = jsonschema.Draft202012Validator(config.load_schema())
    errors = validator.iter_errors({"datasets": datasets})
    return not any(list(error.absolute_path)[:1] == ["datasets"] for error in errors)


def dataset_comments(found: Survey, by_rule: bool) -> list[str]:
    top = ", ".join(f"{name} ({count})" for name, count in found.species[:6])
    if by_rule:
        lines = [
            f"Chosen by rule on the cleaned photos when the split runs: the species of {found.name} with the most",
            "kept photos (the split's counts and decisions say which were chosen, which left out and why).",
        ]
        lines += [f"In GBIF today the most photographed are: {top}."] if top else []
        return lines + ["max_per_occurrence: 1 on a dataset keeps one photo per occurrence (default: all)."]
    lines = [
        "This checkout's schema takes no rules yet ({within: TAXON, top: N}): the species are listed, the most",
        f"photographed in GBIF first (occurrences): {top}." if top else "REPLACE the placeholders with species.",
    ]
    if found.species_total and found.species_total > len(found.species):
        lines.append(f"The other pool names the {len(found.species)} most photographed of {found.species_total}.")
    return lines


def header(found: Survey) -> list[str]:
    lines = [f"fishid configuration for {found.name}, written by `fishid init {found.taxon}`."]
    if found.rank:
        synonym = f" ({found.taxon} is a synonym of it)" if found.synonym else ""
        lines += ["", f"GBIF backbone: {found.label}, {found.rank.lower()}, key {found.key}{synonym}"]
        lines += ["  " + " > ".join(found.lineage.values())]
    if found.photos is not None:
        total = f"{found.photos}, of {found.species_total} species; the most photographed:"
        lines += [f"GBIF occurrences with photos: {total}"]
        lines += [f"  {name}: {count}" for name, count in found.species[:10]]
    if found.unchecked:
        lines += ["", "Not checked:"] + [f"  - {item}" for item in found.unchecked]
    return lines + [
        "",
        "This file is the whole configuration (config/config.yaml is not merged into it). Run it:",
        "  snakemake --profile profiles/local --configfile <this file>",
    ]


def configuration(found: Survey, template: dict, api: str, download: dict) -> str:
    by_rule = datasets_by_rule(found, template)
    rules = schema_takes(by_rule)
    datasets = by_rule if rules else datasets_by_list(found, template)
    gbif_comments, gbif_spec = gbif_source(found, template, api)
    sources = [(gbif_comments, "gbif", gbif_spec, True), *fish_sources(found, template)]
    models = {
        name: Flow(spec)
        for name, spec in template["models"].items()
        if spec["arch"] in STUDY_ARCHS and spec["dataset"] in datasets
    }
    backbones = {
        name: template["backbones"][name] for name in sorted({m.get("backbone") for m in models.values()} - {None})
    }
    models_note = "The study's models: RI from random initialisation, TL on torchvision's ImageNet weights."
    parts = [
        comment(header(found)),
        dump({"seed": template["seed"], "offline": False}),
        entries("sources", sources),
        dump({"licences": template["licences"]}),
        dump({"download": template.get("download", {}) | download}),
        dump({"clean": template["clean"]}),
        comment(dataset_comments(found, rules)) + dump({"datasets": datasets}),
        comment([models_note]) + dump({"backbones": backbones, "training_defaults": template["training_defaults"]}),
        dump({"models": models}),
        dump({"report": {"title": report_title(found.name, [spec for _, _, spec, written in sources if written])}}),
    ]
    return "\n".join(parts)


def report_title(name: str, sources: list[dict]) -> str:
    shown = list(dict.fromkeys(kind(spec["kind"]).title for spec in sources))
    return f"{name} species from " + (" and ".join([", ".join(shown[:-1]), shown[-1]]) if shown[1:] else shown[0])


class Flow(dict):
    """A mapping written on one line ({arch: ri, dataset: two_species}), as the study's file writes them."""


class _Dumper(yaml.SafeDumper):
    pass


def _sequence(dumper, items):
    # Names on one line ([Amphiprion]); lists of mappings one per line.
    flow = not any(isinstance(item, dict | list) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(list, _sequence)
_Dumper.add_representer(Flow, lambda dumper, value: dumper.represent_mapping("tag:yaml.org,2002:map", value, True))


def dump(value: dict) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True)


def comment(lines: list[str], indent: str = "", wrap=True) -> str:
    """Comment lines, long ones wrapped (a name is never cut; YAML to uncomment is never wrapped)."""
    if wrap:
        lines = [part for line in lines for part in _wrapped(escape_text(line)) or [""]]
    return "".join(f"{indent}# {line}".rstrip() + "\n" for line in lines)


def _wrapped(line: str) -> list[str]:
    return textwrap.wrap(line, 100, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def entries(key: str, items) -> str:
    """A mapping whose entries each have their comments, some of them commented out whole."""
    text = f"{key}:\n"
    for comments, name, spec, written in items:
        lines = dump({name: spec}).splitlines()
        body = "".join(f"  {line}\n" for line in lines) if written else comment(lines, "  ", wrap=False)
        text += comment(comments, "  ") + body
    return text


def write(taxon: str, client: web.Client, api: str | None = None, offline=False, download=None) -> str:
    """The configuration for `taxon`, validated; raise ValueError naming what to fix. `api`: a
    GBIF mirror (default GBIF's own), asked and written to the source."""
    taxon, api = checked_taxon(taxon), api or GBIF_API
    found = unchecked(taxon, "offline") if offline else survey(taxon, client, api)
    if found.rank and is_fish(found) is None:
        found.unchecked.append(f"FishBase and FishPix: {fish_unknown(found)}")
    template = yaml.safe_load(TEMPLATE.read_text())
    text = configuration(found, template, api, dict(download or {}))
    # Validated as the pipeline will validate it, from this checkout (its tables are there).
    config.validate(yaml.safe_load(text), source=f"fishid init {taxon}'s configuration", root=TEMPLATE.parents[1])
    return text
