"""Sharded download and cleaning (download.shards, clean.shards): the same stage tables as one
job, byte for byte, and the plan that many jobs per source and for cleaning. And incremental
cleaning: new photos are the only ones decoded again."""

import shutil

import yaml
from projectrun import make_project, planned, run_config, snakemake

SHARDS = {"download": {"shards": 4}, "clean": {"shards": 4}}


def stage_tables(project):
    """The stage tables up to the splits, by path."""
    paths = [
        *sorted((project / "resources/records").glob("*.tsv")),
        *sorted((project / "resources/downloads").glob("*.tsv")),
        project / "results/clean/images.tsv",
        *sorted((project / "results/splits").glob("*.tsv")),
    ]
    return {str(p.relative_to(project)): p.read_bytes() for p in paths}


def test_four_shards_give_the_same_tables_as_one(tmp_path):
    project = make_project(tmp_path / "project")
    config = run_config(project)
    targets = [f"results/splits/{name}.tsv" for name in config["datasets"]]
    result = snakemake(project, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-5000:]
    clean_log = project / "logs/clean_images.log"
    stored = run_config(project)["sources"]["synthetic"]["counts"]
    assert f"decoded {sum(stored.values())} image(s), 0 from the cache" in clean_log.read_text()

    # Three more photos of one species: the rerun decodes those three, the rest come from the cache.
    more = project / "config/more.yaml"
    more.write_text(
        yaml.safe_dump({"sources": {"synthetic": {"counts": {"Amphiprion clarkii": stored["Amphiprion clarkii"] + 3}}}})
    )
    result = snakemake(project, "--cores", "2", *targets, configfiles=[more])
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"decoded 3 image(s), {sum(stored.values())} from the cache" in clean_log.read_text()
    one = stage_tables(project)
    # records and summary, downloads, clean, and per dataset its split, decisions, counts and leaks
    assert len(one) == 2 + 1 + 1 + 4 * len(config["datasets"])

    counts, jobs = planned(project, SHARDS, *targets, configfiles=[more])
    assert counts["fetch_shard"] == 4 * len(config["sources"]) and counts["clean_shard"] == 4
    for source in config["sources"]:
        assert {f"fetch_shard[source={source}, shard={i}-of-4]" for i in range(4)} <= jobs
    assert "list_source" not in counts

    # The shards decode everything again (no per-image cache), the downloads come from the journal.
    shutil.rmtree(project / "results/clean/measures")
    sharded = project / "config/shards.yaml"
    sharded.write_text(yaml.safe_dump(SHARDS))
    result = snakemake(project, "--cores", "2", *targets, configfiles=[more, sharded])
    assert result.returncode == 0, result.stderr[-5000:]
    assert stage_tables(project) == one
    logs = [(project / f"logs/clean_shard/{i}-of-4.log").read_text() for i in range(4)]
    assert (
        sum(int(log.split("decoded ")[1].split()[0]) for log in logs)
        == one["results/clean/images.tsv"].count(b"\n") - 1
    )
    assert "read " in (project / "logs/clean_images.log").read_text()
    for source in config["sources"]:
        for i in range(4):
            assert "0 image(s) to fetch" in (project / f"logs/fetch_shard/{source}/{i}-of-4.log").read_text()
