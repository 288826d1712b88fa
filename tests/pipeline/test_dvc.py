"""Snapshots with DVC: push the tiny run's data and weights to a real (folder) remote, delete
them, pull them back, and find every byte as it was."""

import hashlib
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

# The checkout's DVC setup: what a user's clone has.
DVC_FILES = [".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]
TRACKED = {
    "records": "resources/records",
    "downloads": "resources/downloads",
    "images": "resources/images",
    "backbones": "results/backbones",
    "models": "results/models",
}


def fishid(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "workflow" / "fishid_cli.py"), *args], capture_output=True, text=True, timeout=300
    )


def checksums(root) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in TRACKED.values()
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def checkout(tiny_project, tmp_path):
    """A git clone of the project's DVC setup beside a folder remote, holding the tiny run's data."""
    root = tmp_path / "fishid"
    for name in DVC_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "snapshot", root / "snapshot")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "config").mkdir()
    # The remote, as a user names it: a folder relative to the project.
    (root / "config/config.yaml").write_text(yaml.safe_dump({"snapshots": {"remote": "../dvc-remote"}}))
    for folder in TRACKED.values():
        shutil.copytree(tiny_project / folder, root / folder)
    return root


def test_snapshot_then_restore_brings_back_every_file_byte_for_byte(checkout):
    before = checksums(checkout)
    stored = {
        row.split("\t")[2] for row in (checkout / "resources/downloads/synthetic.tsv").read_text().splitlines()[1:]
    }
    assert {p.removeprefix("resources/images/") for p in before if p.startswith("resources/images/")} == stored
    assert any(p.endswith("weights.pt") for p in before)

    result = fishid("snapshot", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    remote = checkout.parent / "dvc-remote"
    assert len(list(remote.rglob("*"))) > len(before)  # content-addressed objects + directory listings
    for name in TRACKED:
        assert "md5:" in (checkout / "snapshot" / f"{name}.dvc").read_text(), name
    # No ImageNet weights in the tiny run: nothing recorded for them.
    assert "md5:" not in (checkout / "snapshot/weights.dvc").read_text()

    for folder in TRACKED.values():
        shutil.rmtree(checkout / folder)
    shutil.rmtree(checkout / ".dvc/cache")  # so that the data can only come from the remote

    result = fishid("restore", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert f"restored {', '.join(TRACKED)}" in result.stdout
    assert checksums(checkout) == before


def test_restore_without_a_recorded_snapshot_says_what_to_do_first(checkout):
    result = fishid("restore", "--root", str(checkout))
    assert result.returncode == 1
    assert "no snapshot recorded" in result.stderr and "run `fishid snapshot`" in result.stderr


def git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True)


def test_restore_from_a_remote_lacking_one_image_fails_naming_it_and_replaces_nothing(checkout):
    assert fishid("snapshot", "--root", str(checkout)).returncode == 0
    shutil.rmtree(checkout / ".dvc/cache")
    # The remote loses one image's object (DVC names objects by the file's MD5).
    image = next(p for p in sorted((checkout / "resources/images").rglob("*")) if p.is_file())
    md5 = hashlib.md5(image.read_bytes()).hexdigest()
    (checkout.parent / "dvc-remote/files/md5" / md5[:2] / md5[2:]).unlink()
    # Local changes a restore would undo, to see that a failed one undoes none of them.
    records = checkout / "resources/records/synthetic.tsv"
    records.write_text(records.read_text() + "a local edit\n")
    (checkout / "results/models/RI2/weights.pt").unlink()
    result = fishid("restore", "--root", str(checkout))
    assert result.returncode == 1
    assert "lacks the snapshot of resources/images (Missing cache files)" in result.stderr
    assert "nothing was replaced" in result.stderr
    assert records.read_text().endswith("a local edit\n")
    assert not (checkout / "results/models/RI2/weights.pt").exists()


def test_an_older_commits_snapshot_comes_back_after_git_checkout(checkout):
    """The README's `git checkout <commit> && fishid restore`, across two snapshots."""
    first = checksums(checkout)
    assert fishid("snapshot", "--root", str(checkout)).returncode == 0
    git(checkout, "add", "snapshot")
    git(checkout, "commit", "-q", "-m", "first run")
    # A second run: one model retrained (other weights), one record file changed.
    weights = checkout / "results/models/RI2/weights.pt"
    weights.write_bytes(weights.read_bytes() + b"retrained")
    records = checkout / "resources/records/synthetic.tsv"
    records.write_text(records.read_text() + "a second run's record\n")
    assert fishid("snapshot", "--root", str(checkout)).returncode == 0
    git(checkout, "commit", "-q", "-am", "second run")
    second = checksums(checkout)
    assert second != first

    git(checkout, "checkout", "-q", "HEAD~1", "--", "snapshot")
    result = fishid("restore", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert checksums(checkout) == first
    git(checkout, "checkout", "-q", "HEAD", "--", "snapshot")
    assert fishid("restore", "--root", str(checkout)).returncode == 0
    assert checksums(checkout) == second
