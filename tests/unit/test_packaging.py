import re

import yaml
from conftest import REPO


def requirement_pins():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_every_requirement_is_pinned_exactly():
    pins = requirement_pins()
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= pins
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", p) for p in pins), pins


def test_conda_environment_has_the_same_pins():
    env = yaml.safe_load((REPO / "envs" / "fishid.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) == requirement_pins()
