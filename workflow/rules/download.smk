# With download.shards above one, each source is fetched by that many jobs side by side
# (fetch_shard, by record id hash; each with its own journal and its share of the source's
# connection caps), and fetch_images gathers their tables and merges their journals into the
# source's, which the shards reuse: a change of shard count fetches nothing again.
FETCH_SPEC = as_json(
    {
        "download": config.get("download", {}),
        "licences": config.get("licences", {}),
        # A decompression bomb its header declares is refused at download, by the clean stage's limit.
        "max_pixels": config["clean"].get("max_pixels"),
    }
)
FETCH_OFFLINE = config["offline"]
# Where an unsharded fetch_images keeps its journal (beside its table).
SOURCE_JOURNAL = f"{layout.DOWNLOADS}.journal"


rule fetch_shard:
    """Bring one shard of a source's records' images into the store; resumes after a kill."""
    input:
        records=layout.RECORDS,
        cli=CLI,
        code=step_code("fetch"),
    output:
        "resources/downloads/shards/{source}/{shard}.tsv",
    log:
        "logs/fetch_shard/{source}/{shard}.log",
    benchmark:
        "benchmarks/fetch_shard/{source}/{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+-of-\d+",
    conda:
        ENV
    params:
        store=STORE,
        spec=FETCH_SPEC,
        offline=FETCH_OFFLINE,
        shard=shard_args,
        reuse=SOURCE_JOURNAL,
    shell:
        step_shell("fetch")


if DOWNLOAD_SHARDS == 1:

    rule fetch_images:
        """Bring every record's image into the content-addressed store; resumes after a kill."""
        input:
            records=layout.RECORDS,
            cli=CLI,
            code=step_code("fetch"),
        output:
            layout.DOWNLOADS,
        log:
            "logs/fetch_images/{source}.log",
        benchmark:
            "benchmarks/fetch_images/{source}.tsv"
        conda:
            ENV
        params:
            store=STORE,
            spec=FETCH_SPEC,
            offline=FETCH_OFFLINE,
        shell:
            step_shell("fetch", skip=["shard", "reuse"])

else:

    rule fetch_images:
        """The source's download table, gathered from its shards' tables in the records' order."""
        input:
            records=layout.RECORDS,
            shards=expand(
                "resources/downloads/shards/{{source}}/{shard}.tsv",
                shard=shard_names(DOWNLOAD_SHARDS),
            ),
            cli=CLI,
            code=step_code("gather-downloads"),
        output:
            layout.DOWNLOADS,
        log:
            "logs/fetch_images/{source}.log",
        conda:
            ENV
        params:
            journal=SOURCE_JOURNAL,
        shell:
            step_shell("gather-downloads")
