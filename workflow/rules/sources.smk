from fishid.sources.base import local_inputs


rule list_source:
    """List the candidate images of one source, one record per picture, with provenance."""
    input:
        files=lambda wc: local_inputs(wc.source, config["sources"][wc.source]),
        cli=CLI,
        code=lambda wc: source_code(config["sources"][wc.source], wc.source),
    output:
        records=layout.RECORDS,
        summary="resources/records/{source}.summary.tsv",
    log:
        "logs/list_source/{source}.log",
    benchmark:
        "benchmarks/list_source/{source}.tsv"
    conda:
        ENV
    params:
        spec=lambda wc: as_json(config["sources"][wc.source]),
        seed=config["seed"],
        download=as_json(config.get("download", {})),
        # Name matching for records without ranks; its answers are cached per name in
        # taxonomy.cache (resources/taxonomy), which every listing shares and offline ones read.
        taxonomy=as_json(config.get("taxonomy", {})),
        offline=config["offline"],
    shell:
        step_shell("list")
