"""The GBIF adapter: pygbif's real requests, answered by a loopback server in GBIF API shapes."""

import pytest
from fake_sites import FakeSites, Reply, json_reply
from site_replies import match, media, occurrence, small_archive

from fishid import web
from fishid.sources import base as sources
from fishid.sources import dwca, gbif

CLARKII_OCCURRENCES = [
    occurrence(
        1920833659,
        "Amphiprion clarkii",
        [
            media("https://static.example.org/p/1.jpg", creator="Tony", rightsHolder="Tony", references="https://r/1"),
            {"type": "Sound", "identifier": "https://static.example.org/s/1.mp3"},
            media("https://static.example.org/p/2.jpg", licence=""),
        ],
        license="CC_BY_4_0",
    ),
    occurrence(1920847689, "Amphiprion clarkii", [media("https://static.example.org/p/3.jpg")]),
    occurrence(
        1045,
        "Amphiprion clarkii",
        [media("https://static.example.org/p/4.jpg", licence="CC0")],
        "Amphiprion xanthurus Cuvier, 1830",
    ),
    occurrence(1046, "Amphiprion clarkii", [media("https://static.example.org/p/5.jpg", licence="cc-by-nc-nd")]),
    occurrence(1047, "Amphiprion clarkii", [media("https://static.example.org/p/6.jpg")]),
]
GENUS_OCCURRENCES = CLARKII_OCCURRENCES + [
    occurrence(2001, "Amphiprion perideraion", [media("https://static.example.org/p/7.jpg")]),
    occurrence(2002, "", [media("https://static.example.org/p/8.jpg")], name="Amphiprion Bloch & Schneider, 1801"),
]
BY_KEY = {"4QHKG": CLARKII_OCCURRENCES, "3FZ": GENUS_OCCURRENCES}


def search(query):
    assert query["mediatype"] == "StillImage"
    found = BY_KEY[query["taxonKey"]]
    offset, limit = int(query["offset"]), int(query["limit"])
    page = found[offset : offset + limit]
    return json_reply(
        {"offset": offset, "limit": limit, "endOfRecords": offset + limit >= len(found), "count": len(found)}
        | {"results": page}
    )


@pytest.fixture
def gbif_api():
    with FakeSites() as sites:
        sites.add("/v2/species/match", match)
        # The first search answers 503 "come back in 0 s": the listing must retry it.
        sites.add("/v1/occurrence/search", Reply(status=503, headers={"Retry-After": "0"}), search)
        yield sites


def listing(sites, names, **extra):
    spec = {"kind": "gbif", "names": names, "api": sites.url("/"), "page_size": 2, **extra}
    context = sources.Context("gbif", client=web.Client(web.Settings(backoff=0.01, allow_private_hosts=True)))
    return sources.list_source("gbif", spec, context)


def test_a_synonym_lists_the_accepted_species_and_keeps_both_names(gbif_api):
    records, summary = listing(gbif_api, ["Amphiprion xanthurus"])
    assert set(records["taxon"]) == {"Amphiprion clarkii"}
    assert "Amphiprion xanthurus Cuvier, 1830" in set(records["source_taxon"])
    # One record per still image (the sound is skipped), numbered within its occurrence.
    assert list(records["record_id"]) == [
        "gbif:1920833659-1",
        "gbif:1920833659-3",
        "gbif:1920847689-1",
        "gbif:1045-1",
        "gbif:1046-1",
        "gbif:1047-1",
    ]
    first = records.iloc[0]
    assert first["occurrence_id"] == records.iloc[1]["occurrence_id"] == "gbif:1920833659"
    assert (first["creator"], first["rights_holder"], first["page_url"]) == ("Tony", "Tony", "https://r/1")
    assert first["basis_of_record"] == "HUMAN_OBSERVATION" and first["source"] == "gbif"
    # Licences arrive as URLs, codes and text; all come out as ids. A photo without one takes its occurrence's.
    assert list(records["license"]) == [
        "CC-BY-NC-4.0",
        "CC-BY-4.0",
        "CC-BY-NC-4.0",
        "CC0-1.0",
        "CC-BY-NC-ND",
        "CC-BY-NC-4.0",
    ]
    assert summary.to_dict("records") == [{"taxon": "Amphiprion clarkii", "records": 6, "note": ""}]


def test_requests_are_pygbifs_own_and_pages_are_followed(gbif_api):
    listing(gbif_api, ["Amphiprion"])
    matches = [q for path, q in gbif_api.queries if path == "/v2/species/match"]
    searches = [q for path, q in gbif_api.queries if path == "/v1/occurrence/search"]
    assert matches[0]["scientificName"] == "Amphiprion" and "checklistKey" in matches[0]
    # 7 occurrences in pages of 2: 4 pages, plus the 503 that was retried.
    assert [int(q["offset"]) for q in searches] == [0, 0, 2, 4, 6]


def test_a_genus_lists_every_species_and_genus_only_occurrences(gbif_api):
    records, summary = listing(gbif_api, ["Amphiprion"])
    counts = records["taxon"].value_counts().to_dict()
    assert counts == {"Amphiprion clarkii": 6, "Amphiprion perideraion": 1, "Amphiprion": 1}


def test_an_unknown_name_stops_the_listing_naming_it(gbif_api):
    with pytest.raises(ValueError, match="'Amphiprion nonexistus' has no match in the GBIF name backbone"):
        listing(gbif_api, ["Amphiprion nonexistus"])


def test_too_many_occurrences_for_the_search_api_point_to_a_download(gbif_api):
    with pytest.raises(ValueError, match="use a gbif_download source"):
        listing(gbif_api, ["Amphiprion"], max_records=3)


def test_a_search_that_keeps_failing_stops_the_listing_naming_the_request():
    with FakeSites() as sites:
        sites.add("/v2/species/match", match)
        sites.add("/v1/occurrence/search", Reply(status=503))
        spec = {"kind": "gbif", "names": ["Amphiprion"], "api": sites.url("/")}
        client = web.Client(web.Settings(backoff=0.01, retries=1, allow_private_hosts=True))
        with pytest.raises(ValueError) as error:
            sources.list_source("gbif", spec, sources.Context("gbif", client=client))
        searches = sites.hits["/v1/occurrence/search"]
    assert str(error.value).startswith("gbif: occurrence search for 'Amphiprion' failed: HTTP 503 from http://")
    assert str(error.value).endswith("(gave up after 2 attempts)") and searches == 2


def test_offline_refuses_a_web_source(gbif_api):
    with pytest.raises(ValueError, match="offline: true"):
        sources.list_source("gbif", {"kind": "gbif", "names": ["Amphiprion"]}, sources.Context("gbif", offline=True))


def test_a_download_by_key_is_fetched_once_with_pygbif(tmp_path):
    key = "0004567-181003121212138"
    with FakeSites() as sites:
        sites.add(f"/v1/occurrence/download/{key}", json_reply({"key": key, "status": "SUCCEEDED", "size": 1}))
        sites.add(
            f"/v1/occurrence/download/request/{key}",
            Reply(status=420, content_type="text/plain"),  # "Enhance Your Calm": retried
            Reply(body=small_archive(), content_type="application/octet-stream"),
        )
        spec = {"kind": "gbif_download", "key": key, "cache": str(tmp_path / "gbif"), "api": sites.url("/")}
        context = sources.Context("gbif2018", client=web.Client(web.Settings(backoff=0.01, allow_private_hosts=True)))
        records, _ = sources.list_source("gbif2018", spec, context)
        again, _ = sources.list_source("gbif2018", spec, context)
        downloads = sites.hits[f"/v1/occurrence/download/request/{key}"]
    assert downloads == 2, "one 420, one success, nothing on the second listing"
    assert (tmp_path / "gbif" / f"{key}.zip").is_file()
    assert not [p for p in (tmp_path / "gbif").iterdir() if p.name.startswith(".")]
    assert list(records["record_id"]) == ["gbif:11-1", "gbif:11-2", "gbif:12-1"]
    assert list(records["license"]) == ["CC-BY-4.0", "CC-BY-NC-4.0", "CC0-1.0"]
    assert records.drop(columns="listed_at").equals(again.drop(columns="listed_at"))
    assert dwca.read_archive(tmp_path / "gbif" / f"{key}.zip")[2]["basis_of_record"] == "PRESERVED_SPECIMEN"


def test_canonical_names():
    assert gbif.canonical("Amphiprion clarkii (Bennett, 1830)") == "Amphiprion clarkii"
    assert gbif.canonical("Amphiprion Bloch & Schneider, 1801") == "Amphiprion"
    assert gbif.canonical("Amphiprion sp.") == "Amphiprion"


def test_one_word_names_a_genus_or_any_rank_above_and_a_binomial_only_a_species():
    from fishid.sources.gbif import resolve

    def match(name, rank, match_type="EXACT"):
        usage = {"key": "K1", "name": name, "canonicalName": name, "rank": rank}
        return {"usage": usage, "diagnostics": {"matchType": match_type}}

    assert resolve("Pomacentridae", match("Pomacentridae", "FAMILY"))["rank"] == "FAMILY"
    assert resolve("Amphiprion", match("Amphiprion", "GENUS"))["rank"] == "GENUS"
    assert resolve("Amphiprion clarkii", match("Amphiprion clarkii", "SPECIES"))["rank"] == "SPECIES"
    with pytest.raises(ValueError, match="matched only 'Amphiprion' \\(GENUS\\)"):
        resolve("Amphiprion clarkiii", match("Amphiprion", "GENUS", "HIGHERRANK"))
    with pytest.raises(ValueError, match="matched only 'Amphiprion clarkii' \\(SPECIES\\)"):
        resolve("Clarkii", match("Amphiprion clarkii", "SPECIES"))
