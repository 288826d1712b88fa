rule fetch_images:
    """Bring every record's image into the content-addressed store; resumes after a kill."""
    input:
        records="resources/records/{source}.tsv",
        cli=CLI,
        code=package_code("fetch", "store"),
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
    shell:
        "python {input.cli} fetch --records {input.records} --store {params.store} --out {output} 2> {log}"
