"""Cleaning's checks (fishid.clean.check, listed in photo_filters.CHECKS): a new check is one class.

A test-only check, added to the registry as if its class were written into photo_filters,
reaches the measures, the per-image cache, the clean table's columns and the reasons.
"""

import importlib
from contextlib import contextmanager

import numpy as np
import pandas as pd
import yaml
from conftest import REPO
from PIL import Image
from test_clean_cache import clean_run, photos, prepared

from fishid.clean import photo_filters
from fishid.clean import stage as clean
from fishid.clean.check import Above, Measure
from fishid.tables import HIGHER_RANKS


class WarmTint(Above):
    name = "warm_tint"
    measures = (
        Measure(
            "red_excess",
            photo_filters.AVERAGED,
            lambda pixels: round(float((pixels[..., 0] - pixels[..., 2]).mean()), 2),
        ),
    )
    reads = "red_excess"
    setting = "red_excess_above"
    reason = "warm tint (red over blue {value:g} > {limit:g})"


TINT = {"warm_tint": {"red_excess_above": 100}}


@contextmanager
def registered(*checks):
    """The registry with `checks` added; the stage, which reads it on import, is loaded again."""
    saved = photo_filters.CHECKS
    photo_filters.CHECKS = (*saved, *checks)
    try:
        yield importlib.reload(clean)
    finally:
        photo_filters.CHECKS = saved
        importlib.reload(clean)


def red_photo(path) -> None:
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    small[..., 0], small[..., 2] = 250, 10
    Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC).save(path, quality=90)


def test_a_new_check_reaches_the_measures_the_columns_and_the_reasons():
    image = Image.new("RGB", (90, 60), (200, 120, 40))
    before, columns = photo_filters.measure(image), clean.CLEAN_COLUMNS
    with registered(WarmTint()) as stage:
        after = photo_filters.measure(image)
        assert after == {**before, "red_excess": 160.0} and list(after)[-1] == "red_excess"
        assert stage.DECODED_COLUMNS[-2:] == ["red_excess", "derived_path"]
        assert stage.CLEAN_COLUMNS == [*columns[: -len(HIGHER_RANKS)], "red_excess", *HIGHER_RANKS]
        assert "red_excess" in stage.FLOAT_COLUMNS
        table = pd.DataFrame([after, {**after, "red_excess": 20.0, "colours": 3}])
        reasons = photo_filters.non_photo_reasons(table, {"few_colours": {"colours_below": 10}, **TINT})
        # In the registry's order: the new check's reason comes last.
        assert reasons.tolist() == ["few colours (1 < 10); warm tint (red over blue 160 > 100)", "few colours (3 < 10)"]
    assert "red_excess" not in clean.DECODED_COLUMNS and "red_excess" not in photo_filters.measure(image)


def test_a_new_check_remeasures_the_cached_images_and_writes_its_column_and_reason(tmp_path, caplog):
    paths = photos(tmp_path / "photos", ["a0", "a1", "a2"])
    red_photo(tmp_path / "photos" / "red.jpg")
    prepared(tmp_path, {**paths, "red": tmp_path / "photos" / "red.jpg"})
    assert clean_run(tmp_path, caplog, non_photo=TINT) == (4, 0)  # no such check yet: nothing flagged
    with registered(WarmTint()) as stage:
        # The cache holds no red_excess: every image is measured again, with no version bumped.
        assert clean_run(tmp_path, caplog, non_photo=TINT) == (4, 0)
        table = pd.read_csv(tmp_path / "clean.tsv", sep="\t", dtype=str, keep_default_na=False)
        assert list(table.columns) == stage.CLEAN_COLUMNS
        red = table["record_ids"] == "red"
        assert table.loc[red, "reason"].str.match(r"not a photo: warm tint \(red over blue \d+(\.\d+)? > 100\)$").all()
        assert (table.loc[~red, "reason"] == "").all() and table.loc[~red, "red_excess"].astype(float).lt(100).all()
        assert clean_run(tmp_path, caplog, non_photo=TINT) == (0, 4)
    # Its class gone again, the entries it measured still serve (the extra measure is not read).
    assert clean_run(tmp_path, caplog, non_photo=TINT) == (0, 4)
    assert "red_excess" not in pd.read_csv(tmp_path / "clean.tsv", sep="\t", nrows=0).columns


def test_each_check_has_its_settings_in_the_schema_and_the_schema_no_other_check():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    settings = schema["properties"]["clean"]["properties"]["non_photo"]["properties"]
    assert list(settings) == [check.name for check in photo_filters.CHECKS]
    for check in photo_filters.CHECKS:
        assert settings[check.name]["required"] == [check.setting]
        assert check.reads in [m.column for m in check.measures]
    columns = photo_filters.measure_columns()
    assert len(set(columns)) == len(columns)
    assert sorted(columns) == sorted(photo_filters.measure_columns(int) + photo_filters.measure_columns(float))
