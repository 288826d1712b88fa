"""What the steps that hold a dataset ask a cluster for (fishid.memory)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from fishid import memory
from fishid.tables import write_table

pytestmark = pytest.mark.unit

SCALE = Path(__file__).parents[2] / "bench/results/scale.json"
# bench/scale.py's model and caches: 64 px.
SCALE_SIZE = 64


def test_a_request_is_the_floor_until_the_data_outgrows_it_then_grows_with_it():
    need = memory.NEEDS["cache_images"]
    assert memory.request_mb("cache_images", 0) == need.floor_mb
    past = 10 * need.floor_mb / need.per_unit_mb
    assert memory.request_mb("cache_images", past) == int(memory.BASE_MB + need.per_unit_mb * past)
    assert memory.request_mb("cache_images", 2 * past) - memory.request_mb("cache_images", past) == pytest.approx(
        need.per_unit_mb * past, abs=1
    )


def test_each_retry_asks_twice_the_try_before():
    for step in memory.NEEDS:
        first = memory.request_mb(step, 1000)
        assert [memory.request_mb(step, 1000, attempt) for attempt in (1, 2, 3)] == [first, 2 * first, 4 * first]


def test_rows_are_counted_as_the_table_writer_wrote_them(tmp_path):
    table = pd.DataFrame({"image_id": [f"i{n}" for n in range(2345)], "label": "A. clarkii"})
    write_table(table, tmp_path / "split.tsv", list(table.columns))
    assert memory.table_rows(tmp_path / "split.tsv") == 2345
    write_table(table.iloc[:0], tmp_path / "empty.tsv", list(table.columns))
    assert memory.table_rows(tmp_path / "empty.tsv") == 0


def test_a_missing_input_raises_what_snakemake_takes_for_not_there_yet(tmp_path):
    """Snakemake decides a resource later, once the inputs exist, only where the callable
    raised FileNotFoundError naming one of them (snakemake.exceptions.is_file_not_found_error)."""
    for count in (memory.table_rows, memory.file_mb):
        with pytest.raises(FileNotFoundError) as error:
            count(str(tmp_path / "split.tsv"))
        assert error.value.filename == str(tmp_path / "split.tsv")


def test_every_request_covers_the_peaks_measured_at_scale():
    """bench/results/scale.json: each stage's largest job at 5,000, 20,000 and 50,000 photos.
    The caches are measured by the pixels they hold; training and evaluation by the MB the
    cache stage wrote (both caches together: more than the one a model reads)."""
    sizes = json.loads(SCALE.read_text())["sizes"]
    assert [size["photos"] for size in sizes] == [5000, 20000, 50000]
    checked = 0
    for size in sizes:
        stages = {stage["stage"]: stage for stage in size["stages"]}
        cache_mb = stages["cache"]["mb"]
        units = {
            "cache_images": ("cache", memory.pixels_mb(size["kept_photos"], SCALE_SIZE)),
            "pretrain_backbone": ("pretrain", cache_mb),
            "train_model": ("train", cache_mb),
            "evaluate_model": ("evaluate", cache_mb),
            "label_issues": ("label issues", size["kept_photos"]),
        }
        assert set(units) == set(memory.NEEDS)
        for step, (stage, amount) in units.items():
            peak = stages[stage]["max_rss_mb"]
            assert memory.request_mb(step, amount) > 1.2 * peak, (size["photos"], step, peak)
            checked += 1
    assert checked == 15
