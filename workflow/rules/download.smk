# With download.shards above one, each source is fetched by that many jobs (fetch_shard, by
# record id hash) sharing the source's journal, and fetch_images gathers their tables.
FETCH_SPEC = as_json(
    {
        "download": config.get("download", {}),
        "licences": config.get("licences", {}),
    }
)
FETCH_OFFLINE = "--offline" if config["offline"] else ""


rule fetch_shard:
    """Bring one shard of a source's records' images into the store; resumes after a kill."""
    input:
        records="resources/records/{source}.tsv",
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
        journal="resources/downloads/{source}.tsv.journal",
    shell:
        "python {input.cli} fetch --records {input.records} --store {params.store} --spec {params.spec:q}"
        " {params.offline} --shard {params.shard} --journal {params.journal} --out {output} 2> {log}"


if DOWNLOAD_SHARDS == 1:

    rule fetch_images:
        """Bring every record's image into the content-addressed store; resumes after a kill."""
        input:
            records="resources/records/{source}.tsv",
            cli=CLI,
            code=step_code("fetch"),
        output:
            "resources/downloads/{source}.tsv",
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
            "python {input.cli} fetch --records {input.records} --store {params.store} --spec {params.spec:q}"
            " {params.offline} --out {output} 2> {log}"

else:

    rule fetch_images:
        """The source's download table, gathered from its shards' tables in the records' order."""
        input:
            records="resources/records/{source}.tsv",
            shards=expand(
                "resources/downloads/shards/{{source}}/{shard}.tsv",
                shard=shard_names(DOWNLOAD_SHARDS),
            ),
            cli=CLI,
            code=step_code("gather-downloads"),
        output:
            "resources/downloads/{source}.tsv",
        log:
            "logs/fetch_images/{source}.log",
        conda:
            ENV
        shell:
            "python {input.cli} gather-downloads --records {input.records} --shard-tables {input.shards}"
            " --out {output} 2> {log}"
