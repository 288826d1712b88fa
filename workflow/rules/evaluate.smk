rule evaluate_model:
    """Predict the held-out images; accuracy overall and per species, confusion matrix."""
    input:
        weights="results/models/{model}/weights.pt",
        cache=lambda wc: cache_for(model_spec(wc.model)),
        cli=CLI,
        code=package_code("evaluate"),
    output:
        predictions="results/models/{model}/predictions.tsv",
        metrics="results/models/{model}/metrics.json",
    log:
        "logs/evaluate_model/{model}.log",
    benchmark:
        "benchmarks/evaluate_model/{model}.tsv"
    conda:
        ENV
    threads: 2
    params:
        spec=lambda wc: as_json(model_spec(wc.model)),
    shell:
        "python {input.cli} evaluate --name {wildcards.model} --spec {params.spec:q} --weights {input.weights}"
        " --cache {input.cache} --predictions {output.predictions} --metrics {output.metrics}"
        " --threads {threads} 2> {log}"
