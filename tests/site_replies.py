"""Responses in the shapes GBIF, FishBase and FishPix serve, shared by the unit and pipeline tests."""

import io
import zipfile

from fake_sites import Reply, json_reply

CLARKII = {"key": "4QHKG", "name": "Amphiprion clarkii (Bennett, 1830)", "canonicalName": "Amphiprion clarkii"}
CLARKII["rank"] = "SPECIES"
MATCHES = {
    "Amphiprion": {
        "synonym": False,
        "usage": {"key": "3FZ", "name": "Amphiprion Bloch & Schneider, 1801", "canonicalName": "Amphiprion"}
        | {"rank": "GENUS"},
        "diagnostics": {"matchType": "EXACT", "confidence": 99},
    },
    "Amphiprion clarkii": {"synonym": False, "usage": CLARKII, "diagnostics": {"matchType": "EXACT"}},
    "Amphiprion xanthurus": {
        "synonym": True,
        "usage": {"key": "6W2Z", "name": "Amphiprion xanthurus Cuvier, 1830", "rank": "SPECIES"},
        "acceptedUsage": CLARKII,
        "diagnostics": {"matchType": "EXACT"},
    },
}


def media(url, licence="http://creativecommons.org/licenses/by-nc/4.0/", kind="StillImage", **extra):
    return {"type": kind, "format": "image/jpeg", "identifier": url, "license": licence, **extra}


def occurrence(gbif_id, species, media_items, name=None, **extra):
    record = {
        "key": gbif_id,
        "gbifID": str(gbif_id),
        "scientificName": name or f"{species} (Bennett, 1830)",
        "acceptedScientificName": f"{species} (Bennett, 1830)" if species else "Amphiprion Bloch & Schneider, 1801",
        "basisOfRecord": "HUMAN_OBSERVATION",
        "datasetKey": "50c9509d-22c7-4a22-a47d-8c48425ef4a7",
        "license": "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
        "recordedBy": "A. Diver",
        "media": media_items,
        **extra,
    }
    if species:
        record["species"] = species
    return record


def match(query):
    return json_reply(MATCHES.get(query["scientificName"], {"diagnostics": {"matchType": "NONE"}}))


def small_archive(media_root="https://img.example.org/") -> bytes:
    occurrence_txt = (
        "gbifID\tbasisOfRecord\tlicense\tdatasetKey\tscientificName\tspecies\trightsHolder\n"
        "11\tHUMAN_OBSERVATION\tCC_BY_4_0\td1\tAmphiprion clarkii (Bennett, 1830)\tAmphiprion clarkii\tX\n"
        "12\tPRESERVED_SPECIMEN\tCC0_1_0\td2\tAmphiprion ocellaris Cuvier, 1830\tAmphiprion ocellaris\tY\n"
    )
    multimedia_txt = (
        "gbifID\ttype\tidentifier\tlicense\n"
        f"11\tStillImage\t{media_root}1.jpg\t\n"
        f"11\tStillImage\t{media_root}2.jpg\thttp://creativecommons.org/licenses/by-nc/4.0/\n"
        f"12\tStillImage\t{media_root}3.jpg\t\n"
    )
    return dwca_zip(occurrence_txt, multimedia_txt)


def dwca_zip(occurrence_txt: str, multimedia_txt: str) -> bytes:
    """A GBIF download's zip (Darwin Core archive) holding these two tables."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("occurrence.txt", occurrence_txt)
        zipped.writestr("multimedia.txt", multimedia_txt)
        zipped.writestr("meta.xml", "<archive/>")
    return buffer.getvalue()


SUMMARY = "../summary/SpeciesSummary.php?ID={id}&genusname=Amphiprion&speciesname={epithet}"
GENUS_PAGE = (
    "<html><body><table><tr><th>Scientific Name</th><th>Author</th><th>Valid Name</th></tr>"
    + "".join(
        f'<tr><td><i><a href="{SUMMARY.format(id=id, epithet=epithet)}">Amphiprion {epithet}</a></i></td>'
        f"<td>{author}</td><td>Yes</td></tr>"
        for id, epithet, author in [
            (6679, "clarkii", "(Bennett, 1830)"),
            (6685, "perideraion", "Bleeker, 1855"),
            (9999, "nigripes", "Regan, 1908"),
        ]
    )
    + "</table></body></html>"
)


def photo_page(species, photos):
    cells = "".join(
        f'<td><a href="../photos/PicturesSummary.php?what=species">'
        f'<img src="../images/thumbnails/jpg/tn_{code}.jpg"></a>'
        f'<br><img src="../images/species/{code}.jpg"><br>Photographer: '
        f'<a href="../Collaborators/CollaboratorSummary.php?ID=1">{who}</a></td>'
        for code, who in photos
    )
    return f"<html><body><h1>Pictures of <i>{species}</i></h1><table><tr>{cells}</tr></table></body></html>"


# GBIF's occurrence download API: a request answers a key; the download's metadata tells its
# status (PREPARING, RUNNING, SUCCEEDED, or FAILED...) and, once built, its DOI.
DOWNLOAD_KEY = "0001234-240501101010101"
DOWNLOAD_DOI = "10.15468/dl.x7k2pq"
DOWNLOAD_PATH = "/v1/occurrence/download/request"


def download_key(key=DOWNLOAD_KEY) -> Reply:
    return Reply(status=201, body=key.encode("ascii"), content_type="text/plain")


def download_meta(status, key=DOWNLOAD_KEY, doi=DOWNLOAD_DOI) -> Reply:
    meta = {"key": key, "status": status, "created": "2024-05-01T10:10:10.000+00:00", "size": 1}
    if status == "SUCCEEDED":
        meta |= {"doi": doi, "totalRecords": 2, "downloadLink": f"https://api.gbif.org{DOWNLOAD_PATH}/{key}.zip"}
    return json_reply(meta)


# GBIF's backbone as `fishid init` asks it: v2 species/match by name (scientificName) and by key
# (usageKey), each answer with the usage's classification (COL Extended Release: alphanumeric
# keys, intermediate ranks, the usage itself last); and the occurrence search with limit=0 that
# counts the occurrences with photos, faceted by species and genus.
def ranked(key, name, rank, authorship=""):
    """A usage: its name with authorship, and without (canonicalName)."""
    return {"key": key, "name": f"{name} {authorship}".strip(), "canonicalName": name, "rank": rank}


def step(key, name, rank):
    """A step of a classification: the name alone."""
    return {"key": key, "name": name, "rank": rank}


FISH_LINEAGE = [
    step("N", "Animalia", "KINGDOM"),
    step("CH2", "Chordata", "PHYLUM"),
    step("6224G", "Vertebrata", "SUBPHYLUM"),
    step("V2", "Actinopterygii", "CLASS"),
    step("3F4", "Teleostei", "SUBCLASS"),
    step("9N3", "Perciformes", "ORDER"),
]
POMACENTRIDAE = ranked("64T", "Pomacentridae", "FAMILY", "Bleeker, 1877")
GENERA = {
    "3FZ": ranked("3FZ", "Amphiprion", "GENUS", "Bloch & Schneider, 1801"),
    "6GW": ranked("6GW", "Premnas", "GENUS", "Cuvier, 1816"),
    "3K7": ranked("3K7", "Dascyllus", "GENUS", "Cuvier, 1829"),
}
# Amphiprion's photographed species, with the occurrences with photos GBIF counts of each.
AMPHIPRION_SPECIES = {
    "4QHK7": ("Amphiprion ocellaris", 1515),
    "4QHKG": ("Amphiprion clarkii", 1203),
    "4QHKR": ("Amphiprion percula", 980),
    "4QHKP": ("Amphiprion perideraion", 640),
    "4QHKB": ("Amphiprion frenatus", 402),
    "4QHK2": ("Amphiprion akindynos", 301),
    "4QHKS": ("Amphiprion sandaracinos", 150),
}
OTHER_POMACENTRIDAE = {"6GWQ1": ("Premnas biaculeatus", 733), "3K7TT": ("Dascyllus aruanus", 2101)}
OTHER_SPECIES = {"4RT2": ("Carassius auratus", 812), "4RT5": ("Carassius gibelio", 240)}
OTHER_SPECIES |= {"9QSD": ("Passer domesticus", 40210), "9QSM": ("Passer montanus", 3022)}
SPECIES_KEYS = AMPHIPRION_SPECIES | OTHER_POMACENTRIDAE | OTHER_SPECIES
# Carassius as GBIF's old backbone had it: no class between Chordata and Cypriniformes.
CARASSIUS = [step("N", "Animalia", "KINGDOM"), step("CH2", "Chordata", "PHYLUM")]
CARASSIUS += [step("8J2", "Cypriniformes", "ORDER"), step("7K3", "Cyprinidae", "FAMILY")]
SPARROWS = [step("N", "Animalia", "KINGDOM"), step("CH2", "Chordata", "PHYLUM"), step("V", "Aves", "CLASS")]
SPARROWS += [step("9QL", "Passeriformes", "ORDER"), step("9QR", "Passeridae", "FAMILY")]
BACKBONE = {
    "Amphiprion": (GENERA["3FZ"], FISH_LINEAGE + [step("64T", "Pomacentridae", "FAMILY")]),
    "Pomacentridae": (POMACENTRIDAE, FISH_LINEAGE),
    "Carassius": (ranked("3KD", "Carassius", "GENUS", "Nilsson, 1832"), CARASSIUS),
    "Passer": (ranked("9QS", "Passer", "GENUS", "Brisson, 1760"), SPARROWS),
    "Premnas": (GENERA["6GW"], FISH_LINEAGE + [step("64T", "Pomacentridae", "FAMILY")]),
}
# Occurrences with photos under each key: (species facet, genus facet, those filed under no species).
OCCURRENCE_COUNTS = {
    "3FZ": ({k: v[1] for k, v in AMPHIPRION_SPECIES.items()}, {"3FZ": 5291}, 100),
    "64T": (
        {k: v[1] for k, v in (AMPHIPRION_SPECIES | OTHER_POMACENTRIDAE).items()},
        {"3FZ": 5291, "3K7": 2101, "6GW": 733},
        # More than the search API pages through (100,000): a download is requested instead.
        120_000,
    ),
    "3KD": ({"4RT2": 812, "4RT5": 240}, {"3KD": 1052}, 0),
    "9QS": ({"9QSD": 40210, "9QSM": 3022}, {"9QS": 43232}, 0),
    "6GW": ({"6GWQ1": 733}, {"6GW": 733}, 0),
}


def backbone_match(query):
    """A v2 species/match answer, by name or (usageKey) by key."""
    if "usageKey" in query:
        name = SPECIES_KEYS.get(query["usageKey"], (None,))[0]
        genus = GENERA.get(query["usageKey"])
        usage = genus or (ranked(query["usageKey"], name, "SPECIES") if name else None)
        lineage = FISH_LINEAGE
    else:
        usage, lineage = BACKBONE.get(query["scientificName"], (None, []))
    if usage is None:
        return json_reply({"diagnostics": {"matchType": "NONE", "confidence": 100}, "synonym": False})
    return json_reply(
        {
            "synonym": False,
            "usage": usage | {"status": "ACCEPTED", "code": "ZOOLOGICAL"},
            "classification": [*lineage, step(usage["key"], usage["canonicalName"], usage["rank"])],
            "diagnostics": {"matchType": "EXACT", "confidence": 99, "timeTaken": 1},
        }
    )


def occurrence_counts(query):
    """An occurrence search with limit=0: the count and the facets, no results."""
    assert query["limit"] == "0" and query["mediatype"] == "StillImage", query
    by_species, by_genus, unplaced = OCCURRENCE_COUNTS[query["taxonKey"]]
    facets = [("SPECIES_KEY", by_species), ("GENUS_KEY", by_genus)]
    return json_reply(
        {
            "offset": 0,
            "limit": 0,
            "endOfRecords": False,
            "count": sum(by_species.values()) + unplaced,
            "results": [],
            "facets": [
                {
                    "field": field,
                    "counts": [{"name": k, "count": n} for k, n in sorted(counts.items(), key=lambda c: -c[1])],
                }
                for field, counts in facets
            ],
        }
    )


# GBIF's backbone as the listing's name matching asks it (fishid.sources.taxonomy): v2 species/match
# by name on checklist BACKBONE_KEY, with the keys of the study's 2018 download (numeric, every rank
# from kingdom to the usage). The occurrence search gives the same classification, flat.
BACKBONE_KEY = "d7dddbf4-2cf0-4f39-9b2a-bb099caae36c"
AMPHIPRION_LINEAGE = [step("1", "Animalia", "KINGDOM"), step("44", "Chordata", "PHYLUM")]
AMPHIPRION_LINEAGE += [step("204", "Actinopterygii", "CLASS"), step("587", "Perciformes", "ORDER")]
AMPHIPRION_LINEAGE += [step("4499", "Pomacentridae", "FAMILY"), step("2357171", "Amphiprion", "GENUS")]
# Carassius as GBIF's backbone has had it: no class between Chordata and Cypriniformes (keys made up).
GOLDFISH_LINEAGE = [step("1", "Animalia", "KINGDOM"), step("44", "Chordata", "PHYLUM")]
GOLDFISH_LINEAGE += [step("1153", "Cypriniformes", "ORDER"), step("6701", "Cyprinidae", "FAMILY")]
GOLDFISH_LINEAGE += [step("2366608", "Carassius", "GENUS")]
NAME_MATCHES = {
    "Amphiprion clarkii": (ranked("5212081", "Amphiprion clarkii", "SPECIES", "(Bennett, 1830)"), AMPHIPRION_LINEAGE),
    "Amphiprion perideraion": (
        ranked("5212059", "Amphiprion perideraion", "SPECIES", "Bleeker, 1855"),
        AMPHIPRION_LINEAGE,
    ),
    "Carassius auratus": (ranked("2366634", "Carassius auratus", "SPECIES", "(Linnaeus, 1758)"), GOLDFISH_LINEAGE),
}
# A synonym: its own usage, and the accepted name whose classification the answer gives.
NAME_SYNONYMS = {
    "Amphiprion xanthurus": (ranked("5212086", "Amphiprion xanthurus", "SPECIES", "Cuvier, 1830"), "Amphiprion clarkii")
}
NO_NAME_MATCH = {
    "diagnostics": {"matchType": "NONE", "confidence": 100, "note": "No match because of too little confidence"},
    "synonym": False,
}


def name_match(query):
    """GBIF's backbone's v2 species/match answer for query's scientificName: exact, a synonym, or none."""
    name = query.get("scientificName", "")
    diagnostics = {"matchType": "EXACT", "confidence": 99, "timeTaken": 1}
    if name in NAME_SYNONYMS:
        usage, accepted = NAME_SYNONYMS[name]
        accepted_usage, lineage = NAME_MATCHES[accepted]
        return json_reply(
            {
                "synonym": True,
                "usage": usage | {"status": "SYNONYM", "code": "ZOOLOGICAL"},
                "acceptedUsage": accepted_usage | {"status": "ACCEPTED", "code": "ZOOLOGICAL"},
                "classification": [*lineage, step(accepted_usage["key"], accepted, "SPECIES")],
                "diagnostics": diagnostics,
            }
        )
    if name not in NAME_MATCHES:
        return json_reply(NO_NAME_MATCH)
    usage, lineage = NAME_MATCHES[name]
    return json_reply(
        {
            "synonym": False,
            "usage": usage | {"status": "ACCEPTED", "code": "ZOOLOGICAL"},
            "classification": [*lineage, step(usage["key"], name, "SPECIES")],
            "diagnostics": diagnostics,
        }
    )


def occurrence_classification(usage_key, species="", lineage=AMPHIPRION_LINEAGE):
    """The classification fields of an occurrence search answer: each rank's name and key, the
    species (when identified to one), and the key of the name it is filed under."""
    fields = {}
    for rank in lineage:
        fields |= {rank["rank"].lower(): rank["name"], rank["rank"].lower() + "Key": int(rank["key"])}
    if species:
        fields |= {"species": species, "speciesKey": int(usage_key)}
    return fields | {"taxonKey": int(usage_key), "acceptedTaxonKey": int(usage_key), "taxonomicStatus": "ACCEPTED"}
