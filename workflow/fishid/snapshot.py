"""`fishid snapshot` and `fishid restore`: the image store, the source records and the
trained weights, versioned with DVC and kept on a DVC remote.

The repository is a DVC project (`.dvc/`). What it tracks is listed by the `.dvc` files in
`snapshot/`, one per folder; a snapshot hashes those folders into DVC's cache, records the
hashes in the `.dvc` files (commit them with git: they name this version of the data) and
pushes the data to the remote named in the config (`snapshots.remote`). A restore pulls the
versions the `.dvc` files name back into place.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml

# snapshot/<name>.dvc tracks the folder <path> (relative to the project root).
log = logging.getLogger(__name__)

TRACKED = {
    "records": "resources/records",
    "downloads": "resources/downloads",
    "images": "resources/images",
    "weights": "resources/weights",
    "backbones": "results/backbones",
    "models": "results/models",
}
TRACKING_DIR = "snapshot"
REMOTE_NAME = "fishid"
DEFAULT_REMOTE = "../fishid-dvc-remote"


class DvcError(ValueError):
    """DVC refused (unreachable remote, missing data): its own message says what to fix."""


def remote_from_config(config_path) -> str:
    """The remote the config names (`snapshots.remote`), or the default folder beside the project."""
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    return (config.get("snapshots") or {}).get("remote", DEFAULT_REMOTE)


def remote_url(root: Path, remote: str) -> str:
    """A folder remote, relative to the project root, made absolute; URLs unchanged."""
    if "://" in remote:
        return remote
    return str((root / remote).resolve())


def dvc(root: Path, *args: str) -> str:
    """Run DVC (the one installed with this package) in the project; fail with its message."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed in {root}:\n{(result.stderr or result.stdout).strip()}")
    return result.stdout


def tracking_file(root: Path, name: str) -> Path:
    return root / TRACKING_DIR / f"{name}.dvc"


def tracking_text(path: str) -> str:
    return f"outs:\n- path: ../{path}\n"


def recorded(root: Path, name: str) -> bool:
    """Whether snapshot/<name>.dvc names a version (holds a hash), not just the folder."""
    path = tracking_file(root, name)
    return path.exists() and any("md5:" in line for line in path.read_text().splitlines())


def not_in_cache(status: dict) -> list[str]:
    """The tracked folders `dvc status --json` reports as absent from the cache."""
    return sorted(
        path
        for changes in status.values()
        for change in changes
        if isinstance(change, dict)
        for path, state in change.get("changed outs", {}).items()
        if state == "not in cache"
    )


def check_project(root: Path) -> None:
    if not (root / ".dvc").is_dir():
        raise ValueError(
            f"{root} is not the fishid project (no .dvc/ folder): run from the checkout's root, or pass --root"
        )


def use_remote(root: Path, url: str) -> None:
    """Make `url` the default remote in .dvc/config.local (kept out of git: it is per machine)."""
    dvc(root, "remote", "add", "--local", "--force", "--default", REMOTE_NAME, url)


def snapshot(root, remote: str) -> list[str]:
    """Hash and push every tracked folder that exists; return the names snapshotted."""
    root = Path(root).resolve()
    check_project(root)
    present = [name for name, path in TRACKED.items() if (root / path).is_dir()]
    if not present:
        raise ValueError(
            f"nothing to snapshot in {root}: none of {', '.join(TRACKED.values())} exists; run the pipeline first"
        )
    url = remote_url(root, remote)
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    use_remote(root, url)
    targets = []
    for name in present:
        path = tracking_file(root, name)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(tracking_text(TRACKED[name]))
        targets.append(str(path.relative_to(root)))
    dvc(root, "commit", "--force", *targets)
    dvc(root, "push", "--remote", REMOTE_NAME, *targets)
    return present


def restore(root, remote: str) -> list[str]:
    """Pull every folder whose version snapshot/*.dvc records; return the names restored."""
    root = Path(root).resolve()
    check_project(root)
    names = [name for name in TRACKED if recorded(root, name)]
    if not names:
        raise ValueError(
            f"no snapshot recorded in {root / TRACKING_DIR}: run `fishid snapshot` and commit snapshot/*.dvc first"
        )
    use_remote(root, remote_url(root, remote))
    targets = [str(tracking_file(root, name).relative_to(root)) for name in names]
    # Fetch into the cache first: if the remote lacks anything, that fails before checkout
    # has replaced a single file of the working copy.
    try:
        dvc(root, "fetch", "--remote", REMOTE_NAME, *targets)
    except DvcError as error:
        # A remote lacking part of a snapshot fails the fetch: name what is missing, below.
        log.warning("%s", error)
    missing = not_in_cache(json.loads(dvc(root, "status", "--json", *targets) or "{}"))
    if missing:
        raise DvcError(
            f"the remote {remote} lacks the snapshot of {', '.join(missing)} (Missing cache files): "
            "nothing was replaced; push it from where it was made (`fishid snapshot`) or point --remote at it"
        )
    dvc(root, "checkout", "--force", *targets)
    return names
