rule attribution:
    """Who to credit for every image a dataset uses (CC BY requires it), for publication."""
    input:
        records=expand("resources/records/{source}.tsv", source=config["sources"]),
        downloads=expand("resources/downloads/{source}.tsv", source=config["sources"]),
        clean="results/clean/images.tsv",
        splits=expand("results/splits/{dataset}.tsv", dataset=DATASETS),
        cli=CLI,
        code=step_code("attribution"),
    output:
        "results/provenance/attribution.csv",
    log:
        "logs/attribution.log",
    benchmark:
        "benchmarks/attribution.tsv"
    conda:
        ENV
    shell:
        "python {input.cli} attribution --records {input.records} --downloads {input.downloads}"
        " --clean {input.clean} --splits {input.splits} --out {output} 2> {log}"
