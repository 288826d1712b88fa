"""`fishid init TAXON`: the configuration it writes, against a loopback GBIF of the real answer shapes
(pygbif's own requests through the web client), offline, and where GBIF cannot be reached."""

import json
import socket

import pytest
import yaml
from fake_sites import FakeSites, Reply, json_reply
from site_replies import AMPHIPRION_SPECIES, OCCURRENCE_COUNTS, backbone_match, occurrence_counts

from fishid import cli, config, init_config, web
from fishid.sources import gbif

PROJECT = config.SCHEMA_PATH.parents[1]


@pytest.fixture
def gbif_api():
    with FakeSites() as sites:
        sites.add("/v2/species/match", backbone_match)
        sites.add("/v1/occurrence/search", occurrence_counts)
        yield sites


def client(**settings):
    return web.Client(web.Settings(backoff=0.01, **settings))


def written(taxon, sites=None, **settings) -> tuple[str, dict]:
    """The text `fishid init` writes and the configuration it holds, validated as the pipeline validates it."""
    api = sites.url("/") if sites else None
    text = init_config.write(taxon, client(allow_private_hosts=True, **settings), api=api, offline=sites is None)
    return text, config.validate(yaml.safe_load(text), root=PROJECT)


def most_photographed(species: dict, n: int) -> list[str]:
    return [name for name, _ in sorted(species.values(), key=lambda pair: -pair[1])[:n]]


def test_a_genus_gets_its_gbif_fishbase_and_fishpix_sources_datasets_models_and_counts(gbif_api):
    text, written_config = written("Amphiprion", gbif_api)
    sources = written_config["sources"]
    assert {name: spec["kind"] for name, spec in sources.items()} == {
        "gbif": "gbif",
        "fishbase": "fishbase",
        "fishpix": "fishpix",
    }
    assert sources["gbif"]["names"] == ["Amphiprion"] and sources["gbif"]["api"] == gbif_api.url("/")
    assert sources["fishbase"]["genera"] == ["Amphiprion"] and sources["fishpix"]["genus"] == "Amphiprion"
    # The counts GBIF gave, in comments: the occurrences with photos, each species'.
    by_species, _, unplaced = OCCURRENCE_COUNTS["3FZ"]
    assert f"# GBIF occurrences with photos: {sum(by_species.values()) + unplaced}, of 7 species" in text
    for name, count in AMPHIPRION_SPECIES.values():
        assert f"#   {name}: {count}\n" in text
    assert "Actinopterygii > Perciformes > Pomacentridae > Amphiprion" in text
    assert "Not checked" not in text
    # The study's RI and TL models on ImageNet weights, on the study's three datasets.
    assert {name: spec["arch"] for name, spec in written_config["models"].items()} == {
        "RI2": "ri",
        "TL2": "tl",
        "RI4": "ri",
        "TL4": "tl",
        "TL4.2": "tl",
    }
    assert list(written_config["backbones"]) == ["imagenet"]
    datasets = written_config["datasets"]
    assert datasets["four_species"]["species"] == {"within": "Amphiprion", "top": 4}
    assert datasets["five_classes"]["other"] == {"within": "Amphiprion", "label": "other", "size": 312}
    assert written_config["report"]["title"] == "Amphiprion species from GBIF, FishBase and FishPix"
    # pygbif's own requests: the name matched, one search of still images that lists none, then the species named.
    matched = [query for path, query in gbif_api.queries if path == "/v2/species/match"]
    searches = [query for path, query in gbif_api.queries if path == "/v1/occurrence/search"]
    assert matched[0]["scientificName"] == "Amphiprion" and matched[0]["strict"] == "true"
    assert sorted(query["usageKey"] for query in matched[1:]) == sorted(AMPHIPRION_SPECIES)
    assert [(q["taxonKey"], q["mediatype"], q["limit"]) for q in searches] == [("3FZ", "StillImage", "0")]


def test_where_the_schema_takes_no_rules_the_species_are_listed_most_photographed_first(gbif_api, monkeypatch):
    """Decided by trying the schema: here one whose datasets take species lists only (before the rules)."""
    schema = config.load_schema()
    schema["properties"]["datasets"]["additionalProperties"]["properties"]["species"] = {"$ref": "#/$defs/species_list"}
    monkeypatch.setattr(config, "load_schema", lambda: schema)
    text, written_config = written("Amphiprion", gbif_api)
    datasets = written_config["datasets"]
    assert datasets["two_species"]["species"] == most_photographed(AMPHIPRION_SPECIES, 2)
    assert datasets["four_species"]["species"] == most_photographed(AMPHIPRION_SPECIES, 4)
    assert datasets["five_classes"]["other"]["species"] == most_photographed(AMPHIPRION_SPECIES, 7)[4:]
    assert "schema takes no rules yet" in text


def test_a_family_gets_fishbase_for_its_genera_and_a_download_when_the_search_cannot_page_through_it(gbif_api):
    text, written_config = written("Pomacentridae", gbif_api)
    sources = written_config["sources"]
    # 128,025 occurrences with photos: more than the search API's window.
    assert sources["gbif"] == {
        "kind": "gbif_download",
        "request": {"taxa": ["Pomacentridae"]},
        "api": gbif_api.url("/"),
    }
    assert sources["fishbase"]["genera"] == ["Amphiprion", "Dascyllus", "Premnas"]
    assert "fishpix" not in sources and "  # fishpix:\n  #   kind: fishpix\n  #   base_url:" in text
    assert written_config["datasets"]["four_species"]["species"] == {"within": "Pomacentridae", "top": 4}


def test_a_chordate_without_a_class_keeps_fishbase_and_fishpix_commented_and_says_why(gbif_api):
    text, written_config = written("Carassius", gbif_api)
    assert list(written_config["sources"]) == ["gbif"]
    assert "  # fishbase:\n  #   kind: fishbase\n" in text and "  # fishpix:\n" in text
    assert "GBIF's backbone gives Carassius no class" in text
    # Two species with photos: only the two-species dataset and its models.
    assert list(written_config["datasets"]) == ["two_species"]
    assert set(written_config["models"]) == {"RI2", "TL2"}


def test_a_taxon_that_is_no_fish_gets_neither_fishbase_nor_fishpix(gbif_api):
    text, written_config = written("Passer", gbif_api)
    assert list(written_config["sources"]) == ["gbif"]
    assert "fishbase:" not in text and "fishpix:" not in text
    assert written_config["report"]["title"] == "Passer species from GBIF"


def test_offline_it_writes_a_configuration_that_validates_and_says_what_it_could_not_check():
    text, written_config = written("Amphiprion")
    assert written_config["sources"] == {"gbif": {"kind": "gbif", "names": ["Amphiprion"], "max_records": 100000}}
    not_checked = text.split("# Not checked:\n")[1].split("#\n")[0]
    for what in ("the name: not matched in the GBIF backbone (offline)", "the counts", "FishBase and FishPix"):
        assert what in not_checked
    assert "  # fishbase:\n" in text and "  # fishpix:\n" in text
    assert set(written_config["models"]) == {"RI2", "TL2", "RI4", "TL4", "TL4.2"}


def test_gbif_out_of_reach_is_written_as_offline_saying_so():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    text = init_config.write("Amphiprion", client(retries=1, allow_private_hosts=True), api=f"http://127.0.0.1:{port}/")
    config.validate(yaml.safe_load(text), root=PROJECT)
    assert "GBIF could not be reached: connection failed" in text and "(gave up after 2 attempts)" in text


def test_failed_counts_leave_the_name_checked_and_say_the_counts_were_not(gbif_api):
    gbif_api.add("/v1/occurrence/search", Reply(status=400, body=b"bad request", content_type="text/plain"))
    text, written_config = written("Amphiprion", gbif_api)
    assert "the counts: GBIF's occurrence search failed" in text and "HTTP 400" in text
    assert "GBIF occurrences with photos" not in text and "Amphiprion Bloch & Schneider, 1801, genus" in text
    assert set(written_config["datasets"]) == {"two_species", "four_species", "five_classes"}


def test_the_guard_refuses_a_loopback_api_unless_allowed_and_nothing_reaches_it(gbif_api):
    """The address pygbif connects to is checked (web.Client.guard): a refused one is an error that
    names the setting, not an offline configuration."""
    with pytest.raises(ValueError, match="refused host 127.0.0.1: a loopback address.*allow_private_hosts"):
        init_config.write("Amphiprion", client(), api=gbif_api.url("/"))
    assert not gbif_api.hits


@pytest.mark.parametrize(
    "line_break, escaped",
    [("\n", "\\n"), ("\r", "\\r"), ("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")],
)
def test_a_name_from_gbif_cannot_break_out_of_its_comment(gbif_api, line_break, escaped):
    """GBIF's answers are not trusted: a species name that holds a line break (any YAML reads as one)
    stays in its comment line, escaped, instead of adding a key to the configuration."""
    hostile = f"Amphiprion ocellaris{line_break}review: {{predict_roots: ['/']}}"

    def backbone(query):
        answer = json.loads(backbone_match(query).body)
        if query.get("usageKey") == "4QHK7":
            answer["usage"] |= {"canonicalName": hostile, "name": hostile}
        return json_reply(answer)

    gbif_api.add("/v2/species/match", backbone)
    text, written_config = written("Amphiprion", gbif_api)
    assert "review" not in written_config
    assert f"#   {hostile.replace(line_break, escaped)}: 1515\n" in text


@pytest.mark.parametrize(
    "taxon, message",
    [
        ("amphiprion", "not a scientific name"),
        ("Amphiprion clarkii", "is a species; .* give its genus \\(Amphiprion\\)"),
        ("Amphiprion; rm -rf", "not a scientific name"),
        ("Amphiprionx", "'Amphiprionx' has no match in the GBIF name backbone; check its spelling"),
        ("Premnas", "photos of 1 species of Premnas; a classifier needs two"),
    ],
)
def test_what_cannot_make_a_configuration_is_refused_naming_it(gbif_api, taxon, message):
    with pytest.raises(ValueError, match=message):
        written(taxon, gbif_api)


def test_the_command_writes_the_configuration_to_standard_output_only(capsys):
    cli.main(["init", "Amphiprion", "--offline"])
    out = capsys.readouterr().out
    assert config.validate(yaml.safe_load(out), root=PROJECT)["sources"]["gbif"]["names"] == ["Amphiprion"]
    with pytest.raises(SystemExit):
        cli.main(["init", "Amphiprion clarkii", "--offline"])
    assert capsys.readouterr().out == ""


def test_blocks_the_study_shares_are_copied_from_it():
    study = yaml.safe_load(init_config.TEMPLATE.read_text())
    _, written_config = written("Amphiprion")
    for key in ("licences", "clean", "training_defaults"):
        assert written_config[key] == study[key]
    assert written_config["backbones"]["imagenet"] == study["backbones"]["imagenet"]
    assert gbif.SEARCH_WINDOW == written_config["sources"]["gbif"]["max_records"]
