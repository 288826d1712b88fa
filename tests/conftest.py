from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def seed_mini():
    path = SHARED_DATA / "seed-mini"
    if not path.is_dir():
        pytest.skip(f"real test photos not found at {path} (they live beside the checkout, never in it)")
    return path
