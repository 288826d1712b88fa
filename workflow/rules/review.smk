rule label_issues:
    """Likely label errors among the kept images (cleanlab on a cheap cross-validated model),
    least self-confident first: the review app's queue."""
    input:
        clean="results/clean/images.tsv",
        derived=DERIVED,
        cli=CLI,
        code=step_code("label-issues"),
    output:
        "results/review/label_issues.tsv",
    log:
        "logs/label_issues.log",
    benchmark:
        "benchmarks/label_issues.tsv"
    conda:
        ENV
    params:
        seed=config["seed"],
    shell:
        "python {input.cli} label-issues --clean {input.clean} --derived {input.derived}"
        " --seed {params.seed} --out {output} 2> {log}"
