rule plot_model:
    """Loss and accuracy curves and the confusion heatmap of one model."""
    input:
        history="results/models/{model}/history.csv",
        metrics="results/models/{model}/metrics.json",
        cli=CLI,
        code=package_code("figures"),
    output:
        curves="results/figures/{model}/curves.png",
        confusion="results/figures/{model}/confusion.png",
        svgs=multiext("results/figures/{model}/", "curves.svg", "confusion.svg"),
    log:
        "logs/plot_model/{model}.log",
    conda:
        ENV
    shell:
        "python {input.cli} plot-model --name {wildcards.model} --history {input.history}"
        " --metrics {input.metrics} --curves {output.curves} --confusion {output.confusion} 2> {log}"


rule plot_dataset:
    """The dataset's table of images per label and split (the study's Table 1)."""
    input:
        counts="results/splits/{dataset}.counts.tsv",
        cli=CLI,
        code=package_code("figures"),
    output:
        png="results/figures/datasets/{dataset}.png",
        svg="results/figures/datasets/{dataset}.svg",
    log:
        "logs/plot_dataset/{dataset}.log",
    conda:
        ENV
    shell:
        "python {input.cli} plot-dataset --name {wildcards.dataset} --counts {input.counts}"
        " --out {output.png} 2> {log}"


rule report:
    """One HTML page: sources, datasets, the model table and every figure."""
    input:
        clean="results/clean/images.tsv",
        records=expand("resources/records/{source}.tsv", source=config["sources"]),
        counts=expand("results/splits/{dataset}.counts.tsv", dataset=DATASETS),
        metrics=expand("results/models/{model}/metrics.json", model=MODELS),
        dataset_figures=expand(
            "results/figures/datasets/{dataset}.png", dataset=DATASETS
        ),
        model_figures=expand(
            "results/figures/{model}/{figure}.png",
            model=MODELS,
            figure=["curves", "confusion"],
        ),
        cli=CLI,
        code=package_code("report"),
    output:
        "results/report/index.html",
    log:
        "logs/report.log",
    conda:
        ENV
    params:
        spec=as_json(
            {
                "report": config["report"],
                "models": {m: model_spec(m) for m in MODELS},
                "backbones": config.get("backbones", {}),
            }
        ),
    shell:
        "python {input.cli} report --spec {params.spec:q} --clean {input.clean} --records {input.records}"
        " --counts {input.counts} --metrics {input.metrics} --figures results/figures --out {output} 2> {log}"
