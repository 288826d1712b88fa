"""The listing and download rules through Snakemake with web, archive and folder sources.

The web sources point at a loopback server; nothing leaves 127.0.0.1.
"""

import pandas as pd
import yaml
from conftest import REPO
from fake_sites import FakeSites, html_reply, image_reply
from projectrun import make_project, run_config_path, snakemake
from site_replies import GENUS_PAGE, photo_page, small_archive


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_list_and_fetch_rules_run_every_kind(tmp_path):
    make_project(tmp_path)
    folder = tmp_path / "photos" / "Amphiprion clarkii"
    folder.mkdir(parents=True)
    with FakeSites() as sites:
        (tmp_path / "download.zip").write_bytes(small_archive(sites.url("/img/")))
        for n in (1, 2, 3):
            sites.add(f"/img/{n}.jpg", image_reply(10 + n))
        sites.add("/Nomenclature/ValidNameList.php", html_reply(GENUS_PAGE))
        pages = {
            "clarkii": photo_page("Amphiprion clarkii", [("Amcla_u0", "Randall, J.E.")]),
            "perideraion": photo_page("Amphiprion perideraion", [("Ampe_u0", "Allen, G.R.")]),
            "nigripes": photo_page("Amphiprion nigripes", [("Amnig_u0", "Allen, G.R.")]),
        }
        sites.add("/photos/thumbnailssummary.php", lambda q: html_reply(pages[q["Species"]]))
        for seed, code in enumerate(["Amcla_u0", "Ampe_u0", "Amnig_u0"]):
            sites.add(f"/images/species/{code}.jpg", image_reply(seed))
        (folder / "one.jpg").write_bytes(image_reply(9).body)

        config = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
        config["offline"] = False
        config["download"] = {"backoff": 0.01, "rate": 0, "allow_private_hosts": True}
        config["licences"] = {"allow": ["CC-BY-NC", "CC0"], "unknown": "drop"}
        config["sources"] = {
            "fishbase": {"kind": "fishbase", "genera": ["Amphiprion"], "base_url": sites.url("/")}
            | {"licence": "CC-BY-NC-3.0"},
            "gbif2018": {"kind": "gbif_download", "path": str(tmp_path / "download.zip")},
            "mine": {"kind": "folder", "path": str(tmp_path / "photos"), "licence": "CC0-1.0"},
        }
        run_config_path(tmp_path).write_text(yaml.safe_dump(config))
        targets = [f"resources/downloads/{name}.tsv" for name in config["sources"]]
        result = snakemake(tmp_path, *targets, "--cores", "2")
        hits = dict(sites.hits)
    assert result.returncode == 0, result.stderr[-5000:]

    fishbase = read(tmp_path / "resources/downloads/fishbase.tsv")
    assert list(fishbase["error"]) == ["", "", ""]
    assert read(tmp_path / "resources/records/fishbase.summary.tsv")["records"].tolist() == ["1", "1", "1"]
    gbif = read(tmp_path / "resources/downloads/gbif2018.tsv")
    assert gbif["error"].tolist() == ["licence not allowed: CC-BY-4.0", "", ""]
    assert hits.get("/img/1.jpg", 0) == 0, "a refused image is never requested"
    assert read(tmp_path / "resources/downloads/mine.tsv")["error"].tolist() == [""]
    assert len(list((tmp_path / "resources/images").rglob("*.jpg"))) == 6
