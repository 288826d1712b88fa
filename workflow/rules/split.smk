rule split_dataset:
    """The study's split: validation fraction per label, training capped per label."""
    input:
        clean="results/clean/images.tsv",
        cli=CLI,
        code=step_code("split"),
    output:
        split="results/splits/{dataset}.tsv",
        decisions="results/splits/{dataset}.decisions.tsv",
        counts="results/splits/{dataset}.counts.tsv",
    log:
        "logs/split_dataset/{dataset}.log",
    benchmark:
        "benchmarks/split_dataset/{dataset}.tsv"
    conda:
        ENV
    params:
        spec=lambda wc: as_json(config["datasets"][wc.dataset]),
    shell:
        "python {input.cli} split --clean {input.clean} --name {wildcards.dataset} --spec {params.spec:q}"
        " --out {output.split} --decisions {output.decisions} --counts {output.counts} 2> {log}"
