"""Hostile and messy input (issue 16): what a careful user and a hostile data source probed,
as tests. Loopback servers and crafted files only; nothing leaves the machine."""

import builtins
import copy
import errno
import json
import os
import stat
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from fake_sites import FakeSites, image_reply, jpeg, json_reply, redirect
from projectrun import fetch_command, fetches_that_wait
from site_replies import match, media, occurrence

from fishid import config, web
from fishid.download import fetch, store
from fishid.report import attribution, audit
from fishid.sources import base as sources
from fishid.sources import synthetic
from fishid.tables import RECORD_COLUMNS, write_table

LOOPBACK = web.Settings(backoff=0.01, rate=0, retries=0, allow_private_hosts=True)


def secret_photo(tmp_path) -> Path:
    """A private photo outside every source: a valid JPEG, so it would be stored if read."""
    path = tmp_path / "private" / "secret.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(jpeg(99))
    return path


@pytest.fixture
def opened(monkeypatch):
    """Every path the fetch stage opens."""
    paths = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        paths.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(fetch, "open", spy, raising=False)
    return paths


def stored_files(store_root) -> list[Path]:
    return [p for p in Path(store_root).rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- 1. local files


def test_file_urls_from_a_gbif_source_are_refused_without_reading(tmp_path, opened):
    secret = secret_photo(tmp_path)
    with FakeSites() as sites:
        good = sites.add("/img/good.jpg", image_reply(1))
        identifiers = [secret.as_uri(), f"file://127.0.0.1{secret}", good]
        found = [occurrence(31, "Amphiprion clarkii", [media(url) for url in identifiers])]
        sites.add("/v2/species/match", match)
        sites.add(
            "/v1/occurrence/search",
            lambda q: json_reply({"offset": 0, "limit": 20, "endOfRecords": True, "count": 1, "results": found}),
        )
        spec = {"kind": "gbif", "names": ["Amphiprion clarkii"], "api": sites.url("/")}
        records, _ = sources.list_source("gbif", spec, sources.Context("gbif", client=web.Client(LOOPBACK)))
        table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j", LOOPBACK)
    errors = dict(zip(records["media_url"], table["error"]))
    assert errors[secret.as_uri()].startswith("refused file URL: local files are read only by a folder source")
    assert errors[f"file://127.0.0.1{secret}"].startswith("refused file URL with a host")
    assert errors[good] == ""
    assert not [p for p in opened if "private" in p], "the private file was opened"
    assert len(stored_files(tmp_path / "store")) == 1


def dwca_zip(path, identifier, dataset_key="d1"):
    occurrence_txt = (
        "gbifID\tbasisOfRecord\tlicense\tdatasetKey\tscientificName\tspecies\trightsHolder\n"
        f"11\tHUMAN_OBSERVATION\tCC_BY_4_0\t{dataset_key}\tAmphiprion clarkii (Bennett, 1830)\tAmphiprion clarkii\tX\n"
    )
    multimedia_txt = f"gbifID\ttype\tidentifier\tlicense\n11\tStillImage\t{identifier}\t\n"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("occurrence.txt", occurrence_txt)
        zipped.writestr("multimedia.txt", multimedia_txt)
        zipped.writestr("meta.xml", "<archive/>")
    return path


@pytest.mark.parametrize("dataset_key", ["d1", "folder:private"])
def test_a_file_url_in_a_darwin_core_archive_row_is_refused_without_reading(tmp_path, opened, dataset_key):
    secret = secret_photo(tmp_path)
    # A row may even claim a folder source's dataset key: the listing takes the claim away.
    archive = dwca_zip(tmp_path / "download.zip", secret.as_uri(), dataset_key)
    records, _ = sources.list_source("gbif2018", {"kind": "gbif_download", "path": str(archive)})
    assert not records["dataset_key"].str.startswith("folder:").any()
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j")
    assert table["error"][0].startswith("refused file URL")
    assert not [p for p in opened if "private" in p]
    assert stored_files(tmp_path / "store") == []


def test_a_redirect_to_a_loopback_host_is_refused_unless_allowed(tmp_path, monkeypatch):
    real = web.address_refusal
    # "localhost" stands in for a public image host; the redirect goes to 127.0.0.1.
    monkeypatch.setattr(web, "address_refusal", lambda host, *args: "" if host == "localhost" else real(host, *args))
    refusing = web.Settings(backoff=0.01, rate=0, retries=0)
    with FakeSites() as sites:
        sites.add("/img/secret.jpg", image_reply(5))
        sites.add("/img/hop.jpg", redirect(sites.url("/img/secret.jpg")))
        hop = f"http://localhost:{sites.port}/img/hop.jpg"
        records = pd.DataFrame({"record_id": ["hop", "direct", "metadata"], "source": "web"})
        records["media_url"] = [hop, sites.url("/img/secret.jpg"), "http://169.254.169.254/latest/meta-data"]
        table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j", refusing)
        assert sites.hits["/img/hop.jpg"] == 1 and sites.hits["/img/secret.jpg"] == 0
        allowed = fetch.fetch_all(records.iloc[:1], tmp_path / "store2", tmp_path / "j2", LOOPBACK)
        assert sites.hits["/img/secret.jpg"] == 1
    errors = list(table["error"])
    assert errors[0] == (
        "refused host 127.0.0.1: a loopback address; to download from such hosts, set download.allow_private_hosts "
        "to their networks (such as [10.1.0.0/16]) or to true"
    )
    assert errors[1].startswith("refused host 127.0.0.1: a loopback address")
    assert errors[2].startswith("refused host 169.254.169.254: a link-local address")
    assert stored_files(tmp_path / "store") == []
    assert allowed["error"][0] == "" and len(stored_files(tmp_path / "store2")) == 1


def folder_tree(root, files):
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(zlib.crc32(relative.encode())))
    return root


def test_a_symlink_out_of_a_folder_source_is_not_followed(tmp_path, opened):
    secret = secret_photo(tmp_path)
    root = folder_tree(tmp_path / "photos", ["clown/a.jpg", "clown/b.jpg"])
    (root / "clown" / "leak.jpg").symlink_to(secret)
    (root / "clown" / "inside.jpg").symlink_to(root / "clown" / "a.jpg")  # a link that stays inside is fine
    (root / "clown" / "out").symlink_to(secret.parent, target_is_directory=True)
    records, summary = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    assert list(records["record_id"]) == ["mine:clown/a.jpg", "mine:clown/b.jpg", "mine:clown/inside.jpg"]
    assert "skipped clown/leak.jpg: a link to outside the folder" in summary["note"][0]
    # The file is swapped for a link out after the listing: the fetch stage checks again.
    (root / "clown" / "b.jpg").unlink()
    (root / "clown" / "b.jpg").symlink_to(secret)
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j")
    errors = dict(zip(table["record_id"], table["error"]))
    assert errors["mine:clown/a.jpg"] == "" and errors["mine:clown/inside.jpg"] == ""
    assert errors["mine:clown/b.jpg"].startswith("refused file") and "outside the folder" in errors["mine:clown/b.jpg"]
    assert not [p for p in opened if "private" in p]


def test_a_folder_file_over_max_bytes_is_refused(tmp_path):
    root = folder_tree(tmp_path / "photos", ["clown/a.jpg"])
    records, _ = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j", web.Settings(max_bytes=100))
    assert table["error"][0] == "too large: over max_bytes 100"


# --------------------------------------------------------------------------- 2. file modes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_created_files_follow_the_umask(tmp_path, umask, mode):
    root = folder_tree(tmp_path / "photos", ["clown/a.jpg"])
    records, _ = sources.list_source("mine", {"kind": "folder", "path": str(root), "licence": "CC0-1.0"})
    old = os.umask(umask)
    try:
        write_table(records, tmp_path / "records.tsv", RECORD_COLUMNS)
        fetch.run(tmp_path / "records.tsv", tmp_path / "downloads.tsv", tmp_path / "store")
        sha, rel = store.put(tmp_path / "store", jpeg(7), "jpg")
    finally:
        os.umask(old)
    created = [tmp_path / "records.tsv", tmp_path / "downloads.tsv", tmp_path / "downloads.tsv.journal"]
    created += stored_files(tmp_path / "store")
    assert len(created) == 5
    assert {str(p.name): oct(stat.S_IMODE(p.stat().st_mode)) for p in created} == {
        str(p.name): oct(mode) for p in created
    }


# --------------------------------------------------------------------------- 3. one bad record


def test_an_unreadable_file_and_a_malformed_synthetic_url_each_give_a_row(tmp_path, monkeypatch):
    root = folder_tree(tmp_path / "photos", ["clown/a.jpg", "clown/locked.jpg", "clown/c.jpg"])
    locked = root / "clown" / "locked.jpg"
    locked.chmod(0)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # root reads a mode-0 file: refuse it as others are refused
        if Path(file).name == "locked.jpg":
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(fetch, "open", refusing_open, raising=False)
    folder, _ = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    pattern = {"taxon": "A b", "bars": 0, "bar_width": 0, "bar_margin": 0} | dict.fromkeys(
        ["body_color", "fin_color", "tail_color"], "#ff8800"
    )
    params = synthetic.sample_params(pattern, np.random.default_rng(0))
    good = synthetic.encode_url(pattern, params, (64, 48))
    bad = pd.DataFrame(
        {
            "record_id": ["synthetic:good", "synthetic:torn", "synthetic:huge", "synthetic:no-params"],
            "media_url": [
                good,
                good[:40],
                synthetic.encode_url(pattern, params, (100_000, 100_000)),
                synthetic.URL_PREFIX + json.dumps({"pattern": pattern, "params": {}, "size": [64, 48]}),
            ],
        }
    )
    table = fetch.fetch_all(pd.concat([folder, bad]), tmp_path / "store", tmp_path / "j")
    errors = dict(zip(table["record_id"], table["error"]))
    assert errors["mine:clown/locked.jpg"] == f"cannot read {root.resolve()}/clown/locked.jpg: Permission denied"
    assert errors["synthetic:torn"].startswith("malformed synthetic media URL")
    assert "outside 1-2048 pixels a side" in errors["synthetic:huge"]
    assert errors["synthetic:no-params"].startswith("malformed synthetic media URL")
    assert [errors[r] for r in ("mine:clown/a.jpg", "mine:clown/c.jpg", "synthetic:good")] == ["", "", ""]
    assert len(stored_files(tmp_path / "store")) == 3


def test_a_non_utf8_file_name_is_listed_readably_and_fetched(tmp_path):
    root = tmp_path / "photos"
    folder = root / os.fsdecode(b"clown\xff")
    folder.mkdir(parents=True)
    (folder / os.fsdecode(b"caf\xe9.jpg")).write_bytes(jpeg(3))
    (folder / "plain.jpg").write_bytes(jpeg(4))
    records, _ = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    assert list(records["record_id"]) == ["mine:clown\\xff/caf\\xe9.jpg", "mine:clown\\xff/plain.jpg"]
    assert set(records["taxon"]) == {"clown\\xff"}
    write_table(records, tmp_path / "records.tsv", RECORD_COLUMNS)  # the table can hold it
    table = fetch.fetch_all(records, tmp_path / "store", tmp_path / "j")
    assert list(table["error"]) == ["", ""]


def test_a_table_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    table = pd.DataFrame({"name": [os.fsdecode(b"caf\xe9")]})
    with pytest.raises(UnicodeEncodeError):
        write_table(table, tmp_path / "t.tsv")
    assert list(tmp_path.iterdir()) == []


def test_a_class_folder_with_a_subfolder_is_one_class(tmp_path):
    root = folder_tree(tmp_path / "photos", ["clown/a.jpg", "clown/night/b.jpg", "tang/c.jpg"])
    records, _ = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    assert dict(zip(records["record_id"], records["taxon"])) == {
        "mine:clown/a.jpg": "clown",
        "mine:clown/night/b.jpg": "clown",
        "mine:tang/c.jpg": "tang",
    }


# --------------------------------------------------------------------------- 4. output escaping


def image_chain(**record):
    base = dict.fromkeys(RECORD_COLUMNS, "x") | record
    return {
        "sha256": "ab" * 32,
        "records": [base],
        "downloads": [],
        "clean": None,
        "splits": [],
        "left_out": [],
        "leaks": [],
        "backbones": [],
        "models": [],
        "predictions": [],
    }


def test_audit_text_escapes_newlines_and_terminal_escapes():
    creator = "Ann\n    licence:     CC0-1.0   rights holder: forged"
    holder = "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07"
    text = audit.format_image(image_chain(creator=creator, rights_holder=holder, license="CC-BY-4.0"))
    assert "\x1b" not in text and "\x07" not in text
    assert [line for line in text.splitlines() if "licence:" in line] == [
        "    licence:     CC-BY-4.0   rights holder: \\x1b]8;;https://evil.example/\\x07click\\x1b]8;;\\x07"
        "   creator: Ann\\n    licence:     CC0-1.0   rights holder: forged"
    ]
    assert audit.escape_text("a\u202eb\tc") == "a\\u202eb\\tc"


def test_the_attribution_csv_neutralises_formulas(tmp_path):
    fields = {"creator": '=HYPERLINK("https://evil.example","click")', "rights_holder": "+1", "page_url": "@SUM(A1)"}
    records = pd.DataFrame([dict.fromkeys(RECORD_COLUMNS, "") | {"record_id": "r1", "taxon": "A a"} | fields])
    downloads = pd.DataFrame({"record_id": ["r1"], "sha256": ["s1"], "error": [""]})
    clean = pd.DataFrame({"sha256": ["s1"], "taxon": ["A a"]})
    splits = pd.DataFrame({"dataset": ["two"], "sha256": ["s1"]})
    attribution.attribution(records, downloads, clean, splits).to_csv(tmp_path / "a.csv", index=False)
    row = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False).iloc[0]
    assert row["creator"] == "'" + fields["creator"]
    assert (row["rights_holder"], row["page_url"]) == ("'+1", "'@SUM(A1)")
    assert (
        row["record_id"] == "r1" and attribution.neutralise("-2") == "'-2" and attribution.neutralise("\tx") == "'\tx"
    )


# --------------------------------------------------------------------------- 5. configuration


def tiny():
    return yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())


def problems_of(changed) -> str:
    with pytest.raises(config.ConfigError) as error:
        config.validate(changed)
    return str(error.value)


def test_config_cases_are_rejected_naming_the_key():
    base = tiny()
    config.validate(copy.deepcopy(base))
    dataset = next(name for name, spec in base["datasets"].items() if spec.get("other"))
    species = base["datasets"][dataset]["species"][0]

    label = copy.deepcopy(base)
    label["datasets"][dataset]["other"]["label"] = species
    assert f"datasets.{dataset}.other.label: {species!r} is one of the dataset's species" in problems_of(label)

    both = copy.deepcopy(base)
    both["datasets"][dataset]["other"]["species"].append(species)
    assert f"datasets.{dataset}.other.species: {species} also in datasets.{dataset}.species" in problems_of(both)

    crop = copy.deepcopy(base)
    crop["training_defaults"]["crop_scale"] = [0.9, 0.5]
    assert "training_defaults.crop_scale: [0.9, 0.5] is reversed" in problems_of(crop)

    licence = copy.deepcopy(base)
    licence["licences"] = {"allow": ["CC-BY-5.0", "MIT-ish"]}
    text = problems_of(licence)
    assert "licences.allow.0: 'CC-BY-5.0': CC-BY has no version 5.0" in text
    assert "licences.allow.1: 'MIT-ish' is not a licence id" in text

    source = copy.deepcopy(base)
    source["sources"]["mine"] = {"kind": "folder", "path": "photos", "licence": "CC-BY-NC-9.0"}
    assert "sources.mine.licence: 'CC-BY-NC-9.0'" in problems_of(source)


# --------------------------------------------------------------------------- 6. the smaller ones


def served_records(sites, path, count=24) -> list[dict]:
    """`count` records of photos that `sites` serves, written to `path` as a records table."""
    rows = [
        {"record_id": f"web:{i}", "media_url": sites.add(f"/img/{i}.jpg", image_reply(i)), "license": "CC0-1.0"}
        for i in range(count)
    ]
    pd.DataFrame(rows).reindex(columns=RECORD_COLUMNS, fill_value="").to_csv(path, sep="\t", index=False)
    return rows


def test_two_fetches_of_one_journal_keep_the_cap_and_fetch_once(tmp_path):
    spec = {"download": {"workers": 8, "per_host": 3, "rate": 0, "backoff": 0.01, "allow_private_hosts": True}}
    with FakeSites(latency=0.03) as sites:
        served_records(sites, tmp_path / "records.tsv")
        codes, logs = fetches_that_wait(tmp_path, [fetch_command(tmp_path, spec)] * 2)
        hits, peak = dict(sites.hits), sites.peak_connections
    assert codes == [0, 0], logs
    assert all("another fetch holds the records" in log for log in logs), logs
    assert sites.peak_connections <= 3 and peak <= 3
    assert set(hits.values()) == {1}, "an image was fetched twice"


def test_the_shards_of_a_source_fetch_side_by_side_within_its_caps_and_share_its_journal(tmp_path):
    """Each shard has its own journal (no lock between them) and 1/N of the source's per-host
    connections; gather merges their journals into the source's, which a run with another
    shard count reuses."""
    spec = {"download": {"workers": 4, "per_host": 2, "rate": 0, "backoff": 0.01, "allow_private_hosts": True}}
    with FakeSites(latency=0.05) as sites:
        rows = served_records(sites, tmp_path / "records.tsv")
        tables = [tmp_path / f"shard{i}.tsv" for i in range(2)]

        def shard(i, count, out):
            command = fetch_command(tmp_path, spec)
            command[command.index("--out") + 1] = str(out)
            return [*command, "--shard", str(i), str(count), "--reuse", str(tmp_path / "downloads.tsv.journal")]

        runs = [subprocess.Popen(shard(i, 2, tables[i]), stderr=subprocess.PIPE, text=True) for i in range(2)]
        logs = [run.communicate(timeout=120)[1] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], logs
        # Both shards had a connection open at once, and together no more than per_host.
        assert sites.peak_connections == 2, sites.peak_connections
        assert not any("another fetch holds" in log for log in logs)
        fetch.gather(tmp_path / "records.tsv", tables, tmp_path / "downloads.tsv", tmp_path / "downloads.tsv.journal")
        assert set(sites.hits.values()) == {1}
        merged = (tmp_path / "downloads.tsv.journal").read_text().splitlines()
        assert sorted(json.loads(line)["record_id"] for line in merged) == sorted(r["record_id"] for r in rows)

        # Three shards now: every image comes from the merged journal, none is fetched again.
        tables = [tmp_path / f"three{i}.tsv" for i in range(3)]
        for i in range(3):
            subprocess.run(shard(i, 3, tables[i]), check=True, capture_output=True)
        assert set(sites.hits.values()) == {1}
        assert fetch.gather(tmp_path / "records.tsv", tables, tmp_path / "again.tsv")["error"].eq("").all()


def test_a_full_disk_leaves_no_partial_file_and_names_the_disk(tmp_path, monkeypatch):
    real = store.tempfile.NamedTemporaryFile

    class Full:
        def __init__(self, **kwargs):
            self.file = real(**kwargs)
            self.name = self.file.name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.tempfile, "NamedTemporaryFile", Full)
    root = folder_tree(tmp_path / "photos", ["clown/a.jpg"])
    records, _ = sources.list_source("mine", {"kind": "folder", "path": str(root)})
    with pytest.raises(store.StoreFull) as error:
        fetch.fetch_all(records, tmp_path / "store", tmp_path / "j")
    assert f"no space left on the disk holding the image store {tmp_path / 'store'} (mounted at " in str(error.value)
    assert isinstance(error.value, ValueError), "the command line prints it as a message, not a traceback"
    assert stored_files(tmp_path / "store") == []


class Payload:
    """Pickled by reference: loading it would import and run code."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_a_weights_file_holding_code_is_refused_with_a_clear_message(tmp_path):
    import torch

    from fishid.evaluate import inference

    torch.save({"classes": ["a"], "model": Payload()}, tmp_path / "weights.pt")
    with pytest.raises(ValueError) as error:
        inference.load_model({}, tmp_path / "weights.pt")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'weights.pt'}: refused: this file holds Python objects")
    assert "weights_only=False" not in message and "trust" in message


def test_a_synthetic_size_is_bounded(tmp_path):
    with pytest.raises(ValueError, match=r"outside 1-2048 pixels a side"):
        synthetic.decode_url(synthetic.URL_PREFIX + json.dumps({"pattern": {}, "params": {}, "size": [1, 9999]}))
    with pytest.raises(ValueError, match=r"sources.synthetic.size: image size \[4096, 10\]"):
        synthetic.source_listing({"patterns": "x", "size": [4096, 10], "counts": {}}, sources.Context("synthetic"))


def test_bodies_are_described_never_quoted():
    assert fetch.describe(b"root:x:0:0:root:/root:/bin/bash\n") == "not an image: 32 bytes, text"
    assert fetch.describe(b"<html>secret</html>") == "not an image: 19 bytes, HTML or XML"
    assert fetch.describe(b"\x00\x01secret") == "not an image: 8 bytes, binary data of no known image format"
