"""Taxonomy on every record: GBIF's own ranks for GBIF records, GBIF name matching (cached, offline
from the cache) for every other source, the synthetic table's ranks, and the ranks cleaning carries."""

import csv
from collections import Counter

import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, missing_data
from fake_sites import FakeSites, Reply, html_reply, jpeg, json_reply
from site_replies import (
    BACKBONE_KEY,
    GENUS_PAGE,
    GOLDFISH_LINEAGE,
    match,
    media,
    name_match,
    occurrence,
    occurrence_classification,
    photo_page,
)

from fishid import web
from fishid.clean import stage as clean
from fishid.config import validate
from fishid.download import fetch
from fishid.sources import base as sources
from fishid.sources import taxonomy
from fishid.tables import HIGHER_RANKS, RANKS, write_table

ARCHIVE = SHARED_DATA / "gbif-download-amphiprion-2018"
LOOPBACK = web.Settings(backoff=0.01, rate=0, retries=1, allow_private_hosts=True)
MATCH_PATH = "/v2/species/match"
POMACENTRIDAE = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Actinopterygii", "order": "Perciformes"}
POMACENTRIDAE |= {"family": "Pomacentridae"}


def context(name, cache, api="https://api.gbif.org/", offline=False):
    settings = taxonomy.Settings(cache=cache, api=api)
    return sources.Context(name, offline=offline, client=web.Client(LOOPBACK), taxonomy=settings)


def ranks_of(records, taxon):
    """The ranks and key of a taxon's records: one set, or an error naming them all."""
    rows = records.loc[records["taxon"] == taxon, [*RANKS, "taxon_key"]].drop_duplicates()
    assert len(rows) == 1, rows
    return rows.iloc[0].to_dict()


def match_queries(sites):
    return [query for path, query in sites.queries if path == MATCH_PATH]


def folder(root, *classes):
    for number, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        (root / name / "a.jpg").write_bytes(jpeg(number))
    return {"kind": "folder", "path": str(root)}


# --------------------------------------------------------------------------- GBIF's own ranks


def archive_rows(name):
    with open(ARCHIVE / name, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_the_real_archive_gives_every_record_its_own_ranks(tmp_path):
    if not ARCHIVE.is_dir():
        missing_data(ARCHIVE, "the real GBIF download")
    cache = tmp_path / "taxonomy"
    spec = {"kind": "gbif_download", "path": str(ARCHIVE)}
    records, summary = sources.list_source("gbif2018", spec, context("gbif2018", cache, offline=True))
    # The counts the archive's own files give, photo by photo (multimedia.txt joined on gbifID).
    occurrences = {row["gbifID"]: row for row in archive_rows("occurrence.txt")}
    photos = [occurrences[row["gbifID"]] for row in archive_rows("multimedia.txt")]
    assert len(records) == len(photos) == 1514
    for rank in RANKS:
        assert records[rank].value_counts().to_dict() == dict(Counter(photo[rank] for photo in photos)), rank
    assert (records["genus"] == "Amphiprion").sum() == 1514 and (records["family"] == "Pomacentridae").sum() == 1514
    assert (records[["kingdom", "phylum", "class", "order"]] == list(POMACENTRIDAE.values())[:4]).all().all()
    # Identified to the genus only: no species rank, and the genus as taxon.
    genus_only = records["species"] == ""
    assert genus_only.sum() == sum(1 for photo in photos if not photo["species"]) > 0
    assert set(records.loc[genus_only, "taxon"]) == {"Amphiprion"}
    assert (records.loc[~genus_only, "species"] == records.loc[~genus_only, "taxon"]).all()
    # The accepted name's key: a synonym's record gets its accepted species' key, not its own.
    assert list(records["taxon_key"]) == [photo["acceptedTaxonKey"] for photo in photos]
    xanthurus = records["source_taxon"] == "Amphiprion xanthurus Cuvier, 1830"
    assert xanthurus.any() and set(records.loc[xanthurus, "taxon_key"]) == {"5212081"}
    # Nothing needed a name match: nothing asked, nothing cached, no note.
    assert not cache.exists() and (summary["note"] == "").all()


def test_a_gbif_search_record_carries_its_occurrences_classification(tmp_path):
    goldfish = occurrence_classification(2366634, "Carassius auratus", GOLDFISH_LINEAGE)
    found = [
        occurrence(11, "Amphiprion clarkii", [media("https://img.example.org/1.jpg")])
        | occurrence_classification(5212081, "Amphiprion clarkii"),
        occurrence(12, "", [media("https://img.example.org/2.jpg")], name="Amphiprion Bloch & Schneider, 1801")
        | occurrence_classification(2357171),
        occurrence(13, "Carassius auratus", [media("https://img.example.org/3.jpg")]) | goldfish,
    ]
    page = {"offset": 0, "limit": 300, "endOfRecords": True, "count": len(found), "results": found}
    with FakeSites() as sites:
        sites.add(MATCH_PATH, match)
        sites.add("/v1/occurrence/search", json_reply(page))
        spec = {"kind": "gbif", "names": ["Amphiprion"], "api": sites.url("/")}
        records, summary = sources.list_source("gbif", spec, context("gbif", tmp_path / "taxonomy", sites.url("/")))
        # Only the source's own match of its configured name: no record needed one.
        assert [query["scientificName"] for query in match_queries(sites)] == ["Amphiprion"]
    assert ranks_of(records, "Amphiprion clarkii") == POMACENTRIDAE | {
        "genus": "Amphiprion",
        "species": "Amphiprion clarkii",
        "taxon_key": "5212081",
    }
    assert ranks_of(records, "Amphiprion") == POMACENTRIDAE | {"genus": "Amphiprion", "species": ""} | {
        "taxon_key": "2357171"
    }
    # No class in GBIF's answer: the class stays empty, and every other rank stays in its place.
    assert ranks_of(records, "Carassius auratus") == {
        "kingdom": "Animalia",
        "phylum": "Chordata",
        "class": "",
        "order": "Cypriniformes",
        "family": "Cyprinidae",
        "genus": "Carassius",
        "species": "Carassius auratus",
        "taxon_key": "2366634",
    }
    assert (summary["note"] == "").all()


# --------------------------------------------------------------------------- by name matching


@pytest.fixture
def fishbase_and_gbif():
    """FishBase's pages and GBIF's API on one loopback server."""
    with FakeSites() as sites:
        sites.add("/Nomenclature/ValidNameList.php", html_reply(GENUS_PAGE))
        pages = {
            "clarkii": photo_page("Amphiprion clarkii", [("Amcla_u0", "Randall, J.E."), ("Amcla_u1", "Allen, G.R.")]),
            "perideraion": photo_page("Amphiprion perideraion", [("Ampe_u0", "Allen, G.R.")]),
            "nigripes": "<html><body><h1>Pictures of <i>Amphiprion nigripes</i></h1></body></html>",
        }
        sites.add("/photos/thumbnailssummary.php", lambda q: html_reply(pages[q["Species"]]))
        sites.add(MATCH_PATH, name_match)
        yield sites


def test_fishbase_records_are_matched_through_gbif_once_cached_and_read_offline(fishbase_and_gbif, tmp_path):
    sites, cache = fishbase_and_gbif, tmp_path / "taxonomy"
    spec = {"kind": "fishbase", "genera": ["Amphiprion"], "base_url": sites.url("/")}
    records, summary = sources.list_source("fishbase", spec, context("fishbase", cache, sites.url("/")))
    clarkii = POMACENTRIDAE | {"genus": "Amphiprion", "species": "Amphiprion clarkii", "taxon_key": "5212081"}
    assert ranks_of(records, "Amphiprion clarkii") == clarkii
    assert ranks_of(records, "Amphiprion perideraion")["taxon_key"] == "5212059"
    # One request per name that has photos, on GBIF's backbone, each answer kept in the cache.
    queries = match_queries(sites)
    assert sorted(query["scientificName"] for query in queries) == ["Amphiprion clarkii", "Amphiprion perideraion"]
    assert {query["checklistKey"] for query in queries} == {BACKBONE_KEY}
    assert len(list((cache / BACKBONE_KEY).glob("*.json"))) == 2
    # Listed again, the names come from the cache: no request.
    again, _ = sources.list_source("fishbase", spec, context("fishbase", cache, sites.url("/")))
    assert again[RANKS].equals(records[RANKS]) and len(match_queries(sites)) == 2
    # Offline, a folder of the same species gets the same ranks from the cache alone.
    photos = folder(tmp_path / "photos", "Amphiprion clarkii")
    offline, summary = sources.list_source("mine", photos, context("mine", cache, sites.url("/"), offline=True))
    assert ranks_of(offline, "Amphiprion clarkii") == clarkii
    assert len(match_queries(sites)) == 2 and (summary["note"] == "").all()


def test_a_synonym_is_listed_under_its_accepted_name_and_keeps_the_name_it_came_with(tmp_path):
    with FakeSites() as sites:
        sites.add(MATCH_PATH, name_match)
        spec = folder(tmp_path / "photos", "Amphiprion xanthurus", "Carassius auratus")
        records, summary = sources.list_source("mine", spec, context("mine", tmp_path / "cache", sites.url("/")))
    assert dict(zip(records["source_taxon"], records["taxon"])) == {
        "Amphiprion xanthurus": "Amphiprion clarkii",
        "Carassius auratus": "Carassius auratus",
    }
    assert ranks_of(records, "Amphiprion clarkii")["taxon_key"] == "5212081"
    note = dict(zip(summary["taxon"], summary["note"]))["Amphiprion xanthurus"]
    assert note == "a synonym of Amphiprion clarkii in GBIF's checklist: listed as Amphiprion clarkii"
    # GBIF's backbone has had no class for some ray-finned fishes: empty, the order not moved up.
    goldfish = ranks_of(records, "Carassius auratus")
    assert (goldfish["class"], goldfish["order"], goldfish["genus"]) == ("", "Cypriniformes", "Carassius")


def test_a_name_without_a_match_keeps_empty_ranks_and_its_summary_says_why(tmp_path):
    cache = tmp_path / "cache"
    with FakeSites() as sites:
        sites.add(MATCH_PATH, name_match)
        spec = folder(tmp_path / "photos", "Amphiprion nemo", "Amphiprion clarkii")
        records, summary = sources.list_source("mine", spec, context("mine", cache, sites.url("/")))
        notes = dict(zip(summary["taxon"], summary["note"]))
        assert (records.loc[records["taxon"] == "Amphiprion nemo", [*RANKS, "taxon_key"]] == "").all().all()
        assert ranks_of(records, "Amphiprion clarkii")["genus"] == "Amphiprion"
        assert notes["Amphiprion nemo"] == (
            "no match in GBIF's checklist (No match because of too little confidence); "
            "ranks left empty (check the spelling)"
        )
        assert notes["Amphiprion clarkii"] == ""
        # GBIF down: the listing goes on, says so, and caches nothing (a new listing asks again).
        sites.add(MATCH_PATH, Reply(status=503, body=b"busy", content_type="text/plain"))
        spec = folder(tmp_path / "more", "Amphiprion perideraion")
        records, summary = sources.list_source("more", spec, context("more", cache, sites.url("/")))
    note = summary["note"].item()
    assert note.startswith("not checked: gbif: matching 'Amphiprion perideraion' failed: HTTP 503")
    assert note.endswith("ranks left empty, nothing cached") and (records[RANKS] == "").all().all()
    assert len(list(cache.rglob("*.json"))) == 2  # nemo's "no match" and clarkii's match
    # Offline, a name the cache lacks is not looked up: it is noted, naming the file it needs.
    spec = folder(tmp_path / "offline", "Premnas biaculeatus")
    records, summary = sources.list_source("off", spec, context("off", cache, "http://127.0.0.1:9/", offline=True))
    assert summary["note"].item().startswith("not checked: offline, and ") and (records[RANKS] == "").all().all()
    assert str(taxonomy.cache_file(taxonomy.Settings(cache=cache), "Premnas biaculeatus")) in summary["note"].item()


def test_name_matching_connects_only_where_the_download_settings_allow(tmp_path):
    """The match goes through the web client's guard: a GBIF API on a loopback address is refused
    (as a private address is) unless download.allow_private_hosts allows it, before any request."""
    with FakeSites() as sites:
        sites.add(MATCH_PATH, name_match)
        settings = taxonomy.Settings(cache=tmp_path / "cache", api=sites.url("/"))
        guarded = sources.Context("mine", client=web.Client(web.Settings(retries=0)), taxonomy=settings)
        spec = folder(tmp_path / "photos", "Amphiprion clarkii")
        records, summary = sources.list_source("mine", spec, guarded)
        assert sites.queries == []
    assert "not checked: gbif: matching 'Amphiprion clarkii' failed: refused" in summary["note"].item()
    assert (records[RANKS] == "").all().all() and not (tmp_path / "cache").exists()


def answer(usage, classification, match_type="EXACT", confidence=99, **extra):
    return (
        {"usage": usage, "classification": classification}
        | extra
        | {
            "diagnostics": {"matchType": match_type, "confidence": confidence},
        }
    )


def test_only_a_confident_match_of_the_name_itself_gives_ranks_and_only_names_reach_the_records():
    genus = {"key": "2357171", "name": "Amphiprion", "rank": "GENUS"}
    species = {"key": "5212081", "name": "Amphiprion clarkii (Bennett, 1830)", "rank": "SPECIES"}
    lineage = [{"key": "1", "name": "Animalia", "rank": "KINGDOM"}, genus]
    higher, note = taxonomy.read_match("Amphiprion nemo", answer(genus, lineage, "HIGHERRANK"), 90)
    assert higher is None and note == "GBIF matched only the genus Amphiprion, not the name itself; ranks left empty"
    unsure, note = taxonomy.read_match("Amphiprion clarki", answer(species, lineage, "FUZZY", 80), 90)
    assert unsure is None and note.startswith("GBIF's match has confidence 80, below min_confidence 90")
    fuzzy, note = taxonomy.read_match("Amphiprion clarki", answer(species, lineage, "FUZZY", 95), 90)
    assert fuzzy["accepted"] == "Amphiprion clarkii" and "fuzzily" in note
    # What GBIF (or a tampered cache) answers reaches the tables only as Latin names and a key.
    hostile = [
        {"key": "1", "name": "Animalia\r\ngbif:forged", "rank": "KINGDOM"},
        {"key": "4499", "name": "<script>x</script>", "rank": "FAMILY"},
        {"key": "2357171", "name": "Amphiprion", "rank": "GENUS"},
        "not a step",
    ]
    usage = {"key": "../../etc", "name": "Amphiprion clarkii", "rank": "SPECIES"}
    found, _ = taxonomy.read_match("Amphiprion clarkii", answer(usage, hostile), 90)
    assert (found["kingdom"], found["family"], found["genus"], found["taxon_key"]) == ("", "", "Amphiprion", "")
    assert taxonomy.read_match("x", ["not", "a", "match"], 90) == (
        None,
        "GBIF's name match answered a list, not a match; ranks left empty",
    )


def test_a_cached_answer_is_found_by_name_only_inside_the_cache_folder(tmp_path):
    settings = taxonomy.Settings(cache=tmp_path / "cache")
    for name in ("../../outside", "/etc/passwd", "Amphiprion clarkii", "amphiprion_clarkii"):
        path = taxonomy.cache_file(settings, name)
        assert path.parent == tmp_path / "cache" / BACKBONE_KEY and path.name.endswith(".json")
    # Two names of one spelling in letters get two files; a file holding another name's answer is not used.
    first, second = (taxonomy.cache_file(settings, n) for n in ("Amphiprion clarkii", "Amphiprion-clarkii"))
    assert first != second
    second.parent.mkdir(parents=True)
    second.write_text('{"name": "Amphiprion clarkii", "answer": {}}')
    assert taxonomy.cached_answer(second, "Amphiprion-clarkii") is None
    with pytest.raises(ValueError, match=r"taxonomy.checklist_key: '\.\./x' is not a GBIF checklist key"):
        taxonomy.Settings.from_spec({"checklist_key": "../x"})
    with pytest.raises(ValueError, match="taxonomy: unknown key"):
        taxonomy.Settings.from_spec({"cahce": "x"})


def test_the_configuration_takes_a_taxonomy_section():
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate({**config, "taxonomy": {"cache": "resources/taxonomy", "checklist_key": BACKBONE_KEY}})
    with pytest.raises(Exception, match="min_confidence"):
        validate({**config, "taxonomy": {"min_confidence": 101}})


# --------------------------------------------------------------------------- synthetic and clean


def synthetic_spec(**counts):
    return {"kind": "synthetic", "patterns": str(REPO / "config" / "synthetic_species.tsv"), "counts": counts}


def test_synthetic_records_carry_their_tables_ranks_without_the_network(tmp_path):
    counts = {"Amphiprion clarkii": 2, "Premnas biaculeatus": 2, "Chromis viridis": 2}
    cache = tmp_path / "cache"
    spec = synthetic_spec(**counts)
    records, summary = sources.list_source("synthetic", spec, context("synthetic", cache, "http://127.0.0.1:9/", True))
    for taxon in counts:
        genus = taxon.split()[0]
        assert ranks_of(records, taxon) == POMACENTRIDAE | {"genus": genus, "species": taxon, "taxon_key": ""}
    assert not cache.exists() and (summary["note"] == "").all()


def test_clean_carries_the_ranks_an_images_records_agree_on(tmp_path):
    counts = {"Amphiprion clarkii": 3, "Amphiprion perideraion": 2, "Premnas biaculeatus": 3}
    records, _ = sources.list_source("synthetic", synthetic_spec(**counts), sources.Context("synthetic"))
    first = {taxon: records[records["taxon"] == taxon].iloc[0] for taxon in counts}
    premnas = records[records["taxon"] == "Premnas biaculeatus"]

    def copy(record, record_id, like, **fields):
        """The same photo listed again, under `like`'s name and ranks."""
        return record.to_dict() | first[like][[*RANKS, "taxon"]].to_dict() | {"record_id": record_id, **fields}

    planted = pd.DataFrame(
        [
            # The same photo under two species of one genus, and under two genera of one family.
            copy(first["Amphiprion clarkii"], "copy:genus", "Amphiprion perideraion"),
            copy(first["Amphiprion perideraion"], "copy:family", "Premnas biaculeatus"),
            # A record that knows no rank (a name GBIF did not match) leaves its image's ranks as they are.
            copy(premnas.iloc[1], "copy:unranked", "Premnas biaculeatus", **dict.fromkeys(RANKS, "")),
        ]
    )
    listed = pd.concat([records, planted], ignore_index=True)
    downloads = fetch.fetch_all(listed, tmp_path / "store", tmp_path / "journal")
    write_table(listed, tmp_path / "records.tsv")
    write_table(downloads, tmp_path / "downloads.tsv")
    (tmp_path / "exclusions.tsv").write_text("id\treason\n")
    sha = dict(zip(downloads["record_id"], downloads["sha256"]))
    relabelled = sha[premnas.iloc[2]["record_id"]]
    (tmp_path / "relabels.tsv").write_text(f"id\tlabel\treason\twhen\n{relabelled}\tAmphiprion clarkii\tits bars\t\n")
    settings = {"min_side": 32, "max_side": 128, "non_photo": {}}
    table = clean.run(
        [tmp_path / "records.tsv"],
        [tmp_path / "downloads.tsv"],
        tmp_path / "exclusions.tsv",
        tmp_path / "store",
        tmp_path / "derived",
        tmp_path / "clean.tsv",
        settings,
        relabels_path=tmp_path / "relabels.tsv",
    ).set_index("sha256")
    genus_of = table["genus"].to_dict()
    # Conflicts: the rank the records agree on stays, the one they disagree on is empty.
    conflict = table.loc[sha["copy:genus"]]
    assert (conflict["taxon"], conflict["genus"], conflict["family"]) == ("", "Amphiprion", "Pomacentridae")
    conflict = table.loc[sha["copy:family"]]
    assert (conflict["taxon"], conflict["genus"], conflict["family"]) == ("", "", "Pomacentridae")
    assert genus_of[sha["copy:unranked"]] == "Premnas" and table.loc[sha["copy:unranked"], "kept"]
    # A relabelled image takes its new species' ranks, not those of the records that misnamed it.
    assert (table.loc[relabelled, "taxon"], genus_of[relabelled]) == ("Amphiprion clarkii", "Amphiprion")
    # Every image of a species has its species' ranks; the table carries every rank above the species.
    for taxon, images in table[table["taxon"] != ""].groupby("taxon"):
        assert set(images["genus"]) == {taxon.split()[0]} and set(images["order"]) == {"Perciformes"}, taxon
    written = pd.read_csv(tmp_path / "clean.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(written.columns[-len(HIGHER_RANKS) :]) == HIGHER_RANKS
