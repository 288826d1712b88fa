"""FishBase and FishPix adapters against loopback pages in the sites' shapes (DESIGN.md)."""

import pytest
from fake_sites import FakeSites, Reply, html_reply, image_reply
from site_replies import GENUS_PAGE, photo_page

from fishid import web
from fishid.download import fetch
from fishid.sources import base as sources

# The fake sites serve on 127.0.0.1: a loopback host, refused unless allowed.
LOOPBACK = web.Settings(backoff=0.01, rate=0, allow_private_hosts=True)


@pytest.fixture
def fishbase():
    with FakeSites() as sites:
        sites.add("/Nomenclature/ValidNameList.php", html_reply(GENUS_PAGE))
        pages = {
            "clarkii": photo_page("Amphiprion clarkii", [("Amcla_u0", "Randall, J.E."), ("Amcla_u1", "Allen, G.R.")]),
            "perideraion": photo_page("Amphiprion perideraion", [("Ampe_u0", "Allen, G.R.")]),
            "nigripes": "<html><body><h1>Pictures of <i>Amphiprion nigripes</i></h1><p>No pictures.</p></body></html>",
        }
        sites.add("/photos/thumbnailssummary.php", lambda q: html_reply(pages[q["Species"]]))
        for seed, code in enumerate(("Amcla_u0", "Amcla_u1", "Ampe_u0")):
            sites.add(f"/images/species/{code}.jpg", image_reply(seed))
        yield sites


def context(name):
    return sources.Context(name, client=web.Client(LOOPBACK))


def test_fishbase_lists_full_size_photos_with_photographers(fishbase, tmp_path):
    spec = {"kind": "fishbase", "genera": ["Amphiprion"], "base_url": fishbase.url("/"), "licence": "CC-BY-NC-3.0"}
    records, summary = sources.list_source("fishbase", spec, context("fishbase"))
    assert list(records["record_id"]) == ["fishbase:Amcla_u0", "fishbase:Amcla_u1", "fishbase:Ampe_u0"]
    assert list(records["creator"]) == ["Randall, J.E.", "Allen, G.R.", "Allen, G.R."]
    assert records["media_url"][0] == fishbase.url("/images/species/Amcla_u0.jpg")
    assert "thumb" not in "".join(records["media_url"])
    assert records["page_url"][0] == fishbase.url("/photos/thumbnailssummary.php?Genus=Amphiprion&Species=clarkii")
    # A species without photos is reported, not silently missing.
    note = dict(zip(summary["taxon"], summary["note"]))["Amphiprion nigripes"]
    assert note.startswith("no full-size photo on http://127.0.0.1")
    # The listed photos download.
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j", LOOPBACK, policy={})
    assert (table["error"] == "").all() and table["sha256"].str.len().eq(64).all()


def test_fishbase_page_structure_change_names_the_url_and_selector(fishbase):
    fishbase.add("/Nomenclature/ValidNameList.php", html_reply("<html><body><p>Redesigned!</p></body></html>"))
    spec = {"kind": "fishbase", "genera": ["Amphiprion"], "base_url": fishbase.url("/")}
    with pytest.raises(ValueError, match=r"ValidNameList\.php\?syng=Amphiprion.*no species link.*SpeciesSummary"):
        sources.list_source("fishbase", spec, context("fishbase"))


def test_fishbase_thumbnails_without_full_images_is_a_structure_error(fishbase):
    page = '<html><body><i>Amphiprion clarkii</i><img src="../images/thumbnails/jpg/tn_Amcla_u0.jpg"></body></html>'
    fishbase.add("/photos/thumbnailssummary.php", html_reply(page))
    spec = {"kind": "fishbase", "species": ["Amphiprion clarkii"], "base_url": fishbase.url("/")}
    with pytest.raises(ValueError, match=r"Species=clarkii: 1 thumbnail\(s\) but no full-size photo"):
        sources.list_source("fishbase", spec, context("fishbase"))


def test_fishbase_with_no_photo_at_all_fails_loudly(fishbase):
    spec = {"kind": "fishbase", "species": ["Amphiprion nigripes"], "base_url": fishbase.url("/")}
    with pytest.raises(ValueError, match="listed no images\n  Amphiprion nigripes: no full-size photo on"):
        sources.list_source("fishbase", spec, context("fishbase"))


def fishpix_page(name, src, photographer="Hiroshi Senou"):
    return (
        f"<html><body><table><tr><td><b>{name}</b> クマノミ</td></tr>"
        f'<tr><td><img src="{src}"></td></tr>'
        f"<tr><td>Photographer</td><td>{photographer}</td></tr>"
        '<tr><td><img src="https://fishpix.example.org/logo.gif"></td></tr></table></body></html>'
    )


FISHPIX = {
    1: ("Amphiprion clarkii", "../photos/NR0001/KPM-NR0001234.jpg"),
    2: ("Amphiprion perideraion", "../photos/NR0002/KPM-NR0002345.jpg"),
    3: ("Amphiprion sp.", "../photos/NR0003/KPM-NR0003456.jpg"),
}
END_PAGE = "<html><body><p>No more data.</p></body></html>"


@pytest.fixture
def fishpix():
    with FakeSites() as sites:

        def detail(query):
            assert query["SPECIES"] == "Amphiprion"
            found = FISHPIX.get(int(query["START"]))
            return html_reply(fishpix_page(*found) if found else END_PAGE)

        sites.add("/fishimage-e/detail", Reply(status=503, headers={"Retry-After": "0"}), detail)
        yield sites


def test_fishpix_pages_through_one_photo_per_page(fishpix):
    spec = {"kind": "fishpix", "genus": "Amphiprion", "base_url": fishpix.url("/"), "licence": ""}
    records, summary = sources.list_source("fishpix", spec, context("fishpix"))
    assert list(records["record_id"]) == ["fishpix:KPM-NR0001234", "fishpix:KPM-NR0002345", "fishpix:KPM-NR0003456"]
    assert list(records["taxon"]) == ["Amphiprion clarkii", "Amphiprion perideraion", "Amphiprion"]
    assert records["source_taxon"][2] == "Amphiprion sp."
    assert records["media_url"][0] == fishpix.url("/photos/NR0001/KPM-NR0001234.jpg")
    assert set(records["creator"]) == {"Hiroshi Senou"}
    assert records["page_url"][1] == fishpix.url("/fishimage-e/detail?START=2&SPECIES=Amphiprion")
    assert fishpix.hits["/fishimage-e/detail"] == 5  # one 503 retried, 3 photos, the end page


def test_fishpix_structure_change_names_the_url(fishpix):
    fishpix.add(
        "/fishimage-e/detail", html_reply("<html><body><b>Amphiprion clarkii</b><p>photo gone</p></body></html>")
    )
    spec = {"kind": "fishpix", "genus": "Amphiprion", "base_url": fishpix.url("/")}
    with pytest.raises(ValueError, match=r"detail\?START=1&SPECIES=Amphiprion: a species name but no <img>"):
        sources.list_source("fishpix", spec, context("fishpix"))


def test_fishpix_empty_genus_is_an_error_not_an_empty_table(fishpix):
    fishpix.add("/fishimage-e/detail", html_reply(END_PAGE))
    spec = {"kind": "fishpix", "genus": "Amphiprion", "base_url": fishpix.url("/")}
    with pytest.raises(ValueError, match="listed no images\n  Amphiprion: no photo at http"):
        sources.list_source("fishpix", spec, context("fishpix"))
