rule plot_dataset:
    """The dataset's table of images per label and split (the study's Table 1)."""
    input:
        counts="results/splits/{dataset}.counts.tsv",
        cli=after_cleaning(CLI),
        code=step_code("plot-dataset"),
    output:
        png=report(
            "results/figures/datasets/{dataset}.png",
            caption="../report/dataset.rst",
            category="Datasets",
        ),
        svg="results/figures/datasets/{dataset}.svg",
    log:
        "logs/plot_dataset/{dataset}.log",
    benchmark:
        "benchmarks/plot_dataset/{dataset}.tsv"
    conda:
        ENV
    shell:
        step_shell("plot-dataset")


REPORT_TEMPLATES = sorted(
    map(str, Path(PACKAGE_DIR, "fishid/report/templates").glob("*.j2"))
)


rule report:
    """One self-contained HTML page: a summary chart of every model, provenance, datasets,
    the model comparison and every figure with its caption (at display size)."""
    input:
        clean=layout.CLEAN_TABLE,
        records=expand(layout.RECORDS, source=config["sources"]),
        downloads=expand(layout.DOWNLOADS, source=config["sources"]),
        counts=expand("results/splits/{dataset}.counts.tsv", dataset=DATASETS),
        decisions=expand("results/splits/{dataset}.decisions.tsv", dataset=DATASETS),
        leaks=expand("results/splits/{dataset}.leaks.tsv", dataset=DATASETS),
        metrics=expand("results/models/{model}/metrics.json", model=MODELS),
        histories=expand("results/models/{model}/history.csv", model=MODELS),
        citation="results/provenance/citation.md",
        derived="results/provenance/derived_dataset.tsv",
        label_issues="results/review/label_issues.json",
        detect=["results/detect/quality.json"] if DETECT else [],
        detect_sheet=["results/detect/crops.png"] if DETECT else [],
        model_figures=expand(
            "results/figures/{model}/{figure}.png", model=MODELS, figure=MODEL_FIGURES
        ),
        cli=CLI,
        # The page's templates are code too, but not Python that codedeps could follow.
        code=[*step_code("report"), *REPORT_TEMPLATES],
    output:
        "results/report/index.html",
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        ENV
    params:
        # The folder of every model's figures (results/figures).
        figures=lambda wc, input: str(Path(input.model_figures[0]).parents[1]),
        # A function, so that braces in settings (CLIP prompts) are not read as wildcards.
        spec=lambda wc: as_json(
            {
                "report": config["report"],
                "models": {m: model_spec(m) for m in MODELS},
                "backbones": config.get("backbones", {}),
            }
        ),
    shell:
        step_shell("report", skip=[] if DETECT else ["detect", "detect_sheet"])
