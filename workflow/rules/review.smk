rule label_issues:
    """Likely label errors, outliers, near duplicates and clusters among the kept images
    (cleanlab's Datalab on cross-validated probabilities of a model on a backbone's frozen
    features, or of a small network per fold), least self-confident first: the review
    app's queue."""
    input:
        clean=layout.CLEAN_TABLE,
        derived=DERIVED,
        backbone=label_issues_backbone(),
        crops=CROPS if LABEL_ISSUES["crops"] else [],
        crop_store=CROP_STORE if LABEL_ISSUES["crops"] else [],
        cli=CLI,
        code=step_code("label-issues"),
    output:
        table="results/review/label_issues.tsv",
        summary="results/review/label_issues.json",
    log:
        "logs/label_issues.log",
    benchmark:
        "benchmarks/label_issues.tsv"
    conda:
        ENV
    # One: on 2 busy cores the demo's queue took 43 s with one thread and 178 s with two.
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb(
            "label_issues", lambda wc, input: memory.table_rows(input.clean)
        ),
    params:
        # A function: a string param is formatted with the wildcards, and a network's CLIP
        # prompt (a training setting) holds {species}.
        spec=lambda wc: as_json(LABEL_ISSUES),
        seed=config["seed"],
    shell:
        step_shell("label-issues", skip=label_issues_skipped())


rule embedding_map:
    """The review app's map of a model's embeddings of its evaluated photos (t-SNE,
    or UMAP with report.embedding_map), computed once here, not on every visit."""
    input:
        predictions="results/models/{model}/predictions.tsv",
        metrics="results/models/{model}/metrics.json",
        figure_data="results/models/{model}/figure_data.npz",
        cli=after_cleaning(CLI),
        code=step_code("embedding-map"),
    output:
        "results/review/embedding_map/{model}.json",
    log:
        "logs/embedding_map/{model}.log",
    benchmark:
        "benchmarks/embedding_map/{model}.tsv"
    conda:
        ENV
    params:
        method=config["report"]["embedding_map"],
        seed=config["seed"],
    shell:
        step_shell("embedding-map")


rule embedding_maps:
    """Every model's embedding map: a target you ask for (`snakemake embedding_maps`),
    not part of the default run (each map's job took 4-5 s on the tiny project)."""
    input:
        expand("results/review/embedding_map/{model}.json", model=MODELS),
