# The per-image work (decode, measure, hash, derived copy) is cached per SHA-256 in
# results/clean/measures. With clean.shards above one it runs in that many clean_shard jobs
# (by SHA-256 prefix), and clean_images gathers their tables and makes the decisions across
# images; with one, clean_images does it all.
CLEAN_INPUTS = {
    "records": expand(layout.RECORDS, source=config["sources"]),
    "downloads": expand(layout.DOWNLOADS, source=config["sources"]),
}
CLEAN_CACHE = layout.CLEAN_CACHE


rule clean_shard:
    """Decode, measure, hash and derive one shard's images (through the per-image cache)."""
    input:
        **CLEAN_INPUTS,
        cli=CLI,
        code=step_code("clean-shard"),
    output:
        "results/clean/shards/{shard}.tsv",
    log:
        "logs/clean_shard/{shard}.log",
    benchmark:
        "benchmarks/clean_shard/{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+-of-\d+",
    conda:
        ENV
    threads: 2
    params:
        store=STORE,
        cache=CLEAN_CACHE,
        spec=per_image_spec(),
        shard=shard_args,
    shell:
        step_shell("clean-shard")


# A checkpoint: once it has run, Snakemake reads the new table before deciding which splits
# to rerun (rule split_dataset's params hold each dataset's rows of it).
checkpoint clean_images:
    """Decode, verify and convert every stored image; drop what is unusable, with a reason."""
    input:
        **CLEAN_INPUTS,
        shards=expand(
            "results/clean/shards/{shard}.tsv",
            shard=shard_names(CLEAN_SHARDS) if CLEAN_SHARDS > 1 else [],
        ),
        exclusions=config["clean"]["exclusions"],
        relabels=config["clean"]["relabels"],
        cli=CLI,
        code=step_code("clean"),
    output:
        table=layout.CLEAN_TABLE,
        derived=directory(DERIVED),
    log:
        "logs/clean_images.log",
    benchmark:
        "benchmarks/clean_images.tsv"
    conda:
        ENV
    threads: 2
    params:
        store=STORE,
        spec=as_json(config["clean"]),
    shell:
        step_shell("clean", skip=[] if CLEAN_SHARDS > 1 else ["shard_tables"])
