rule evaluate_model:
    """Predict the held-out images; every metric of the report, the arrays its figures need
    from the model (embeddings, saliency, mistakes), and the model's figures: curves,
    confusion, per-species accuracy, calibration, open-set threshold, saliency, mistakes and
    the embedding map (PNG and SVG)."""
    input:
        weights="results/models/{model}/weights.pt",
        history="results/models/{model}/history.csv",
        cache=lambda wc: cache_for(model_spec(wc.model)),
        split=lambda wc: layout.SPLIT.format(dataset=model_spec(wc.model)["dataset"]),
        cli=after_cleaning(CLI),
        code=step_code("evaluate"),
    output:
        predictions="results/models/{model}/predictions.tsv",
        metrics="results/models/{model}/metrics.json",
        figure_data="results/models/{model}/figure_data.npz",
        pngs=[model_figure(stem) for stem in MODEL_FIGURES],
        svgs=expand("results/figures/{{model}}/{figure}.svg", figure=MODEL_FIGURES),
    log:
        "logs/evaluate_model/{model}.log",
    benchmark:
        "benchmarks/evaluate_model/{model}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=memory_mb("evaluate_model", cache_mb),
    params:
        spec=lambda wc: as_json(model_spec(wc.model)),
        other_label=lambda wc: other_label(model_spec(wc.model)["dataset"]),
        figures=lambda wc: f"results/figures/{wc.model}",
        embedding_map=config["report"]["embedding_map"],
    shell:
        step_shell("evaluate")


rule predict_folder:
    """Label every photo of config['predict_folder'] with a trained model (a target you ask
    for: snakemake results/predictions/TL4.csv --config predict_folder=my_photos)."""
    input:
        weights="results/models/{model}/weights.pt",
        meta="results/models/{model}/meta.json",
        folder=lambda wc: predict_folder(),
        cli=CLI,
        code=step_code("predict"),
    output:
        "results/predictions/{model}.csv",
    log:
        "logs/predict_folder/{model}.log",
    benchmark:
        "benchmarks/predict_folder/{model}.tsv"
    conda:
        ENV
    shell:
        step_shell("predict", skip=["results"])
