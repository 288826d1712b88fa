import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def missing_data(path: Path, what: str):
    """A test's data is not at `path`: skip it, saying where it was looked for; in CI
    (CI=true), where the data is provided, fail instead, so that no test is lost unseen."""
    message = f"{what} not found at {path} (it lives beside the checkout, never in it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI must provide it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def seed_mini():
    path = SHARED_DATA / "seed-mini"
    if not path.is_dir():
        missing_data(path, "the real test photos")
    return path


@pytest.fixture(scope="session")
def tiny_project(request, tmp_path_factory):
    """The whole DAG of tests/config/tiny.yaml, run once in a copy of the project (see
    tests/projectrun.py); tests that change it put it back as it was."""
    from projectrun import make_project, snakemake

    require_one_worker(request.session, "tiny_project")
    # The SLURM run (which compares itself with this one) mostly waits on the cluster: start
    # it first, so that this run and the tests after it fill that wait.
    module = _slurm_module(request.session)
    if module is not None:
        module.start_in_background(tmp_path_factory.mktemp("slurm"))
    project = make_project(tmp_path_factory.mktemp("project"))
    # As the README runs it: through the local profile (one thread per training job).
    result = snakemake(project, "--profile", str(project / "profiles/local"))
    assert result.returncode == 0, result.stderr[-5000:]
    return project


# The session's projects, each built by one fixture: the tests that use one run in one
# worker (pytest-xdist's --dist loadgroup, in pyproject.toml), so that it is built once.
PROJECT_GROUPS = {"tiny_project": "tiny", "demo": "demo"}


# First: xdist reads the groups in its own hook of this name (it appends `@group` to the ids).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """The folder a test lives in is its kind: `pytest -m unit` runs the quick ones."""
    for item in items:
        kind = Path(item.fspath).parent.name
        if kind in ("unit", "pipeline"):
            item.add_marker(kind)
        group = next((g for fixture, g in PROJECT_GROUPS.items() if fixture in item.fixturenames), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def require_one_worker(session, fixture: str):
    """Fail, rather than build a project once per worker and let its tests race, where
    pytest-xdist did not group the tests on it."""
    if getattr(session.config.option, "loadgroup", False):
        lost = [item.nodeid for item in session.items if fixture in item.fixturenames and "@" not in item.nodeid]
        if lost:
            pytest.fail(f"pytest-xdist did not group the tests on {fixture} ({lost[0]}, …): see requirements.txt")


def _slurm_module(session):
    return next((item.module for item in session.items if item.path.name == "test_slurm.py"), None)


def pytest_sessionfinish(session):
    module = _slurm_module(session)
    for run in module.BACKGROUND if module is not None else []:
        run.stop()
