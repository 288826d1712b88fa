rule list_source:
    """List the candidate images of one source, one record per picture, with provenance."""
    input:
        patterns=lambda wc: config["sources"][wc.source].get("patterns", []),
        cli=CLI,
        code=package_code("synthetic"),
    output:
        "resources/records/{source}.tsv",
    log:
        "logs/list_source/{source}.log",
    benchmark:
        "benchmarks/list_source/{source}.tsv"
    conda:
        ENV
    params:
        spec=lambda wc: as_json(config["sources"][wc.source]),
        seed=config["seed"],
    shell:
        "python {input.cli} list {wildcards.source} --spec {params.spec:q} --seed {params.seed}"
        " --out {output} 2> {log}"
