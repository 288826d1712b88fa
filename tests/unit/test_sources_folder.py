"""The folder source: an existing image tree goes through the same pipeline as the web sources."""

import shutil

import pytest
from fake_sites import jpeg

from fishid.download import fetch
from fishid.sources import base as sources


def tree(root, layout):
    for relative in layout:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(len(str(path))))
    return root


def test_class_folders_become_taxa(tmp_path):
    root = tree(tmp_path / "kaggle", ["clownfish/a.jpg", "clownfish/b.JPG", "tang/c.png", "tang/notes.txt"])
    spec = {
        "kind": "folder",
        "path": str(root),
        "labels": {"clownfish": "Amphiprion ocellaris"},
        "licence": "CC-BY-4.0",
    }
    records, summary = sources.list_source("kaggle", spec)
    assert list(records["record_id"]) == ["kaggle:clownfish/a.jpg", "kaggle:clownfish/b.JPG", "kaggle:tang/c.png"]
    assert list(records["taxon"]) == ["Amphiprion ocellaris", "Amphiprion ocellaris", "tang"]
    assert list(records["source_taxon"]) == ["clownfish", "clownfish", "tang"]
    assert set(records["source_split"]) == {""} and set(records["license"]) == {"CC-BY-4.0"}
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j", policy={})
    assert (table["error"] == "").all()


def test_a_tree_already_split_keeps_its_split(tmp_path):
    root = tree(tmp_path / "animal10n", ["train/cat/1.jpg", "train/dog/2.jpg", "val/cat/3.jpg", "val/dog/4.jpg"])
    records, summary = sources.list_source("animals", {"kind": "folder", "path": str(root)})
    assert dict(zip(records["record_id"], records["source_split"])) == {
        "animals:train/cat/1.jpg": "train",
        "animals:train/dog/2.jpg": "train",
        "animals:val/cat/3.jpg": "val",
        "animals:val/dog/4.jpg": "val",
    }
    assert dict(zip(summary["taxon"], summary["records"])) == {"cat": 2, "dog": 2}


def test_an_empty_class_is_reported_and_a_bad_label_named(tmp_path):
    root = tree(tmp_path / "set", ["a/1.jpg"])
    (root / "b").mkdir()
    records, summary = sources.list_source("set", {"kind": "folder", "path": str(root)})
    assert dict(zip(summary["taxon"], summary["note"]))["b"].startswith("no image in")
    with pytest.raises(ValueError, match="sources.set.labels: no folder named c"):
        sources.list_source("set", {"kind": "folder", "path": str(root), "labels": {"c": "C c"}})
    shutil.rmtree(root / "a")
    with pytest.raises(ValueError, match="listed no images"):
        sources.list_source("set", {"kind": "folder", "path": str(root)})
