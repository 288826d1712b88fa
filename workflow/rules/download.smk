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
        spec=as_json(
            {
                "download": config.get("download", {}),
                "licences": config.get("licences", {}),
            }
        ),
        offline="--offline" if config["offline"] else "",
    shell:
        "python {input.cli} fetch --records {input.records} --store {params.store} --spec {params.spec:q}"
        " {params.offline} --out {output} 2> {log}"
