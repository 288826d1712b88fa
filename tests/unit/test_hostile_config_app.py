"""Hostile input, second pass (issue 24, points 4 and 5): configurations that must be refused
by key, and the review app under a foreign Host header, a Predict folder outside the project,
a small PNG that declares 81 megapixels, uploaded file names that spreadsheets would run, and
decisions aimed out of the project. The app runs in Flask's test client and, for the Host
check, as `fishid review` serves it, over loopback; every file is a real one in tmp_path."""

import copy
import csv
import html
import http.client
import io
import json
import shutil
import struct
import threading
import zlib

import pytest
import test_review_app
import yaml
from conftest import REPO
from PIL import Image
from test_review_app import client_of, shas, upload
from toydata import SETTINGS, toy_cache

from fishid import config
from fishid.review import files, server
from fishid.train import record, stage

# The review app tests' project (12 rendered photos, cleaned), as a fixture of this module.
review_project = test_review_app.project

# --------------------------------------------------------------------------- 4. configuration


def tiny() -> dict:
    return yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())


def problems_of(changed: dict, root=REPO) -> str:
    with pytest.raises(config.ConfigError) as error:
        config.validate(changed, root=root)
    return str(error.value)


def test_fractions_that_leave_nothing_to_train_on_are_refused_by_key():
    both = tiny()
    both["datasets"]["pair"].update(val_fraction=0.6, test_fraction=0.6)
    assert "datasets.pair.val_fraction + test_fraction: 0.6 + 0.6 = 1.2 leaves no image to train on" in problems_of(
        both
    )
    alone = tiny()
    alone["datasets"]["pair"]["val_fraction"] = 1.0
    assert "datasets.pair.val_fraction: 1.0 leaves no image to train on" in problems_of(alone)
    below = tiny()
    below["datasets"]["pair"].update(val_fraction=0.5, test_fraction=0.4)
    config.validate(below, root=REPO)


def test_a_model_that_is_its_own_control_is_refused_by_key():
    changed = tiny()
    changed["models"]["TL3o-random"]["control_of"] = "TL3o-random"
    assert "models.TL3o-random.control_of: 'TL3o-random' is the model itself" in problems_of(changed)


def test_a_dataset_species_no_source_lists_is_refused_by_key():
    changed = tiny()
    changed["datasets"]["pair"]["species"].append("Amphiprion latezonatus")
    changed["datasets"]["trio_other"]["other"]["species"].append("Amphiprion sebae")
    text = problems_of(changed)
    assert "datasets.pair.species: Amphiprion latezonatus listed by no source" in text
    assert "datasets.trio_other.other.species: Amphiprion sebae listed by no source" in text


def test_species_are_left_to_the_split_stage_where_a_source_lists_what_it_finds():
    """A folder source's classes are its subfolders at run time: the config cannot tell."""
    changed = tiny()
    changed["datasets"]["pair"]["species"].append("Amphiprion latezonatus")
    changed["sources"]["photos"] = {"kind": "folder", "path": "photos"}
    config.validate(changed, root=REPO)


@pytest.fixture
def project_root(tmp_path):
    """A project folder with the tables tiny.yaml names, and a file outside it."""
    root = tmp_path / "project"
    (root / "config").mkdir(parents=True)
    for name in ("exclusions.tsv", "relabels.tsv", "synthetic_species.tsv"):
        shutil.copy(REPO / "config" / name, root / "config" / name)
    (tmp_path / "elsewhere.tsv").write_text("id\treason\n")
    config.validate(tiny(), root=root)
    return root


@pytest.mark.parametrize("key", ["exclusions", "relabels"])
def test_a_user_table_outside_the_project_is_refused_unless_absolute(project_root, key):
    escaping = tiny()
    escaping["clean"][key] = "../../../../etc/passwd"
    assert f"clean.{key}: '../../../../etc/passwd' leads outside the project folder" in problems_of(
        escaping, project_root
    )
    (project_root / "config/link.tsv").symlink_to(project_root.parent / "elsewhere.tsv")
    linked = tiny()
    linked["clean"][key] = "config/link.tsv"
    assert f"clean.{key}: 'config/link.tsv' leads outside the project folder" in problems_of(linked, project_root)
    absolute = tiny()
    absolute["clean"][key] = str(project_root.parent / "elsewhere.tsv")
    config.validate(absolute, root=project_root)


def test_a_missing_patterns_file_is_named_by_its_key(project_root):
    changed = tiny()
    changed["sources"]["synthetic"]["patterns"] = "config/species_patterns.tsv"
    assert "sources.synthetic.patterns: 'config/species_patterns.tsv' is not a file" in problems_of(
        changed, project_root
    )


# --------------------------------------------------------------------------- 5. the review app


def test_a_foreign_host_is_refused_before_any_page(review_project):
    app, client = client_of(review_project)
    for host in ("rebound.example:8765", "rebound.example", "127.0.0.1.rebound.example:8765", "", "a b"):
        answer = client.get("/predict", headers={"Host": host})
        assert answer.status_code == 400, host
        assert app.config["CSRF_TOKEN"] not in answer.get_data(as_text=True)
    for host in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST"):
        assert client.get("/predict", headers={"Host": host}).status_code == 200, host


def test_the_served_app_answers_only_to_its_own_address_and_port(review_project):
    """As `fishid review` serves it: the Host header a rebinding page sends is its own name."""
    running, url = server.make(review_project, "127.0.0.1", 0)
    port = running.server_port
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()

    def get(host):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("GET", "/predict", skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read().decode()

    try:
        token = running.app.config["CSRF_TOKEN"]
        for host in (f"rebound.example:{port}", f"localhost:{port + 1}", "localhost"):
            status, body = get(host)
            assert status == 400 and token not in body, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            status, body = get(host)
            assert status == 200 and token in body, host
    finally:
        running.shutdown()
        running.server_close()
    assert url == f"http://127.0.0.1:{port}/"


@pytest.fixture
def with_trained_model(review_project, tmp_path_factory):
    """A real (tiny, one-epoch) model under results/models/M, which the Predict page runs."""
    toy = toy_cache(tmp_path_factory.mktemp("toy"), per_label=8, n_val=2)
    weights, history, meta = stage.train_model({**SETTINGS, "epochs": 1}, toy)
    folder = review_project / "results/models/M"
    folder.mkdir(parents=True)
    record.save(weights, history, meta, folder / "weights.pt", folder / "history.csv", folder / "meta.json")
    return review_project


def predict_folder(client, app, folder):
    form = {"csrf": app.config["CSRF_TOKEN"], "model": "M", "folder": folder}
    return client.post("/predict", data=form, content_type="multipart/form-data")


def test_a_predict_folder_outside_the_project_is_refused_unlisted(with_trained_model, tmp_path_factory):
    app, client = client_of(with_trained_model)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret-name.jpg").write_bytes(b"x")
    (with_trained_model / "photos").mkdir()
    (with_trained_model / "photos/out").symlink_to(outside, target_is_directory=True)
    for folder in ("/etc", str(outside), "../" * 12 + "etc", "photos/out", "photos/\x00"):
        answer = predict_folder(client, app, folder)
        page = answer.get_data(as_text=True)
        assert answer.status_code == 400, folder
        assert "refused" in page or "NUL" in page, folder
        assert "secret-name" not in page and "passwd" not in page, folder
    inside = with_trained_model / "photos/new"
    inside.mkdir()
    Image.new("RGB", (40, 40), (200, 40, 30)).save(inside / "red.jpg")
    answer = predict_folder(client, app, "photos/new")
    assert answer.status_code == 200 and "red.jpg" in answer.get_data(as_text=True)


def test_review_predict_roots_adds_a_folder_outside_the_project(review_project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("lab_photos")
    assert files.predict_folder(review_project, str(outside / "batch"), ["."] + [str(outside)]) == outside / "batch"
    with pytest.raises(ValueError, match="review.predict_roots"):
        files.predict_folder(review_project, str(outside / "batch"), ["."])
    assert config.default("review", "predict_roots") == ["."]


def huge_png(side=9000) -> bytes:
    """A valid greyscale PNG of side x side pixels, a few tens of kilobytes (zeros compress)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte, then the row
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_an_upload_of_81_megapixels_is_refused_from_its_header(with_trained_model):
    """Measured: before, checking this 79 kB file alone decoded it (2.9 s, 464 MB more
    memory) and the page went on to label it; now the header refuses it in milliseconds."""
    data = huge_png()
    assert len(data) < 300_000
    app, client = client_of(with_trained_model)
    answer = upload(client, app, "big.png", data)
    assert answer.status_code == 400
    assert "big.png: 81,000,000 pixels, over the limit of 50,000,000 per photo" in answer.get_data(as_text=True)


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (30, 60, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_uploaded_names_that_start_like_formulas_are_neutralised_in_the_csv(with_trained_model):
    app, client = client_of(with_trained_model)
    # (A multipart file name cannot hold a double quote, so no string argument here.)
    names = ["=cmd|' /C calc'!A0.jpg", "+1.jpg", "-2.jpg", "@SUM(A1).jpg", "plain.jpg"]
    form = {"csrf": app.config["CSRF_TOKEN"], "model": "M", "photos": [(io.BytesIO(photo()), n) for n in names]}
    answer = client.post("/predict", data=form, content_type="multipart/form-data")
    assert answer.status_code == 200
    key = answer.get_data(as_text=True).split("/predict/")[1].split(".csv")[0]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/predict/{key}.csv").get_data(as_text=True))))
    assert sorted(row["file"] for row in rows) == sorted(["'" + n for n in names[:4]] + ["plain.jpg"])
    assert all(row["predicted"] in ("red fish", "blue fish") and not row["error"] for row in rows)
    # JSON is not a spreadsheet: the names as uploaded.
    exported = json.loads(client.get(f"/predict/{key}.json").get_data(as_text=True))
    assert sorted(row["file"] for row in exported) == sorted(names)


def test_a_decision_is_not_written_out_of_the_project(review_project):
    outside = review_project.parent / "outside.tsv"
    settings = yaml.safe_load((review_project / "config/config.yaml").read_text())
    changed = copy.deepcopy(settings)
    changed["clean"]["exclusions"] = "../outside.tsv"
    (review_project / "config/config.yaml").write_text(yaml.safe_dump(changed))
    app, client = client_of(review_project)
    form = {
        "csrf": app.config["CSRF_TOKEN"],
        "sha256": shas(review_project)[0],
        "action": "exclude",
        "reason": "blurred",
    }
    answer = client.post("/decide", data=form)
    assert answer.status_code == 400
    page = html.unescape(answer.get_data(as_text=True))
    assert "clean.exclusions: '../outside.tsv' leads outside the project folder" in page
    assert not outside.exists()
