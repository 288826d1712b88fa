rule attribution:
    """Who to credit for every image a dataset uses (CC BY requires it), for publication."""
    input:
        records=expand(layout.RECORDS, source=config["sources"]),
        downloads=expand(layout.DOWNLOADS, source=config["sources"]),
        clean=layout.CLEAN_TABLE,
        splits=expand(layout.SPLIT, dataset=DATASETS),
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
        step_shell("attribution")


rule citation:
    """How to cite the data the datasets use: each GBIF download's DOI, each other source's
    terms, and the rows of GBIF's derived-dataset form (images per GBIF datasetKey)."""
    input:
        records=expand(layout.RECORDS, source=config["sources"]),
        downloads=expand(layout.DOWNLOADS, source=config["sources"]),
        splits=expand(layout.SPLIT, dataset=DATASETS),
        cli=after_cleaning(CLI),
        code=step_code("citation"),
    output:
        citation="results/provenance/citation.md",
        derived="results/provenance/derived_dataset.tsv",
    log:
        "logs/citation.log",
    benchmark:
        "benchmarks/citation.tsv"
    conda:
        ENV
    params:
        # The downloads' keys and DOIs are read from the listing's records of them
        # (gbif_request.download_of); a new download changes the records table too.
        sources=as_json(config["sources"]),
    shell:
        step_shell("citation")
