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
