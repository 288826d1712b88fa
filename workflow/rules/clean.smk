rule clean_images:
    """Decode, verify and convert every stored image; drop what is unusable, with a reason."""
    input:
        records=expand("resources/records/{source}.tsv", source=config["sources"]),
        downloads=expand("resources/downloads/{source}.tsv", source=config["sources"]),
        exclusions=config["clean"]["exclusions"],
        cli=CLI,
        code=step_code("clean"),
    output:
        table="results/clean/images.tsv",
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
        "python {input.cli} clean --records {input.records} --downloads {input.downloads}"
        " --exclusions {input.exclusions} --store {params.store} --derived {output.derived}"
        " --spec {params.spec:q} --threads {threads} --out {output.table} 2> {log}"
