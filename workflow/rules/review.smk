rule label_issues:
    """Likely label errors, outliers, near duplicates and clusters among the kept images
    (cleanlab's Datalab on cross-validated probabilities of a model on a backbone's frozen
    features, or of a small network per fold), least self-confident first: the review
    app's queue."""
    input:
        clean="results/clean/images.tsv",
        derived=DERIVED,
        backbone=label_issues_backbone(),
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
    params:
        spec=as_json(LABEL_ISSUES),
        backbone=lambda wc, input: (
            f"--backbone {input.backbone}" if input.backbone else ""
        ),
        seed=config["seed"],
    shell:
        "python {input.cli} label-issues --clean {input.clean} --derived {input.derived}"
        " --spec {params.spec:q} {params.backbone} --seed {params.seed} --threads {threads}"
        " --out {output.table} --summary {output.summary} 2> {log}"
